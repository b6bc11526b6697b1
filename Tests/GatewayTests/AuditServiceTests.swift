import EventLog
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Gateway
import OpenShellAPI
import Projections
import Testing

/// The audit API on a running gateway (issue 12): paginated history, watch without gap or duplicate,
/// operator only.
@Suite struct AuditServiceTests {
  typealias AuditClient = Openshell_Audit_V1_AuditService.Client<HTTP2ClientTransport.Posix>

  func createProviders(_ gw: TestGateway, _ names: [String]) async throws {
    try await gw.withClient { api in
      for n in names {
        _ = try await api.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = n; $0.type = "generic"; $0.credentials = ["TOKEN": "t-\(n)"]
            }
          })
      }
    }
  }

  /// `openshell audit --follow` must not hold a gateway stop for its grace period (a fresh-clone user saw
  /// `gateway stop` take 10 s with `audit -f` open): the watch ends with UNAVAILABLE "shutting down".
  @Test func shutdownEndsAnOpenWatch() async throws {
    let gw = try await TestGateway.start(shutdownGracePeriod: .seconds(120))
    try await createProviders(gw, ["watched"])
    let started = ContinuousClock.now
    // The stop comes once the watch is open (its first history event arrived), not after a fixed wait:
    // on a loaded machine 300 ms was sometimes too short and the stop raced the RPC's start.
    let (opened, open) = AsyncStream<Void>.makeStream()
    let ended: RPCError? = try await withAudit(gw) { audit in
      try await withThrowingTaskGroup(of: RPCError?.self) { group in
        group.addTask {
          defer { open.finish() }  // a watch that fails before its first event must not hang the test
          do {
            try await audit.watchEvents(.with { $0.fromSeq = 1 }) { response in
              for try await _ in response.messages { open.yield() }
            }
            return nil
          } catch let e as RPCError { return e }
        }
        for await _ in opened { break }
        gw.running.shutdown()
        return try await group.next() ?? nil
      }
    }
    _ = try? await gw.task.value
    #expect(ended?.code == .unavailable, "\(String(describing: ended))")
    #expect(ended?.message.contains("shutting down") == true, "\(String(describing: ended))")
    // Not a timing benchmark: without draining, the stop would wait out the 120 s grace period.
    #expect(ContinuousClock.now - started < .seconds(60))
  }

  @Test func queryPagesThroughFilteredHistoryInOrder() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    let names = (0..<20).map { "p\($0)" }
    try await createProviders(gw, names)
    try await withAudit(gw) { audit in
      var summaries: [String] = []
      var seqs: [UInt64] = []
      var token = ""
      var pages = 0
      repeat {
        let page = try await audit.queryEvents(
          .with {
            $0.filter.types = ["provider.created"]
            $0.pageSize = 7
            $0.pageToken = token
          })
        pages += 1
        #expect(page.events.count <= 7)
        #expect(page.floorSeq == 1)
        summaries += page.events.map(\.summary)
        seqs += page.events.map(\.seq)
        token = page.nextPageToken
      } while !token.isEmpty
      #expect(pages == 3)
      #expect(seqs == seqs.sorted() && Set(seqs).count == 20)
      #expect(summaries.count == 20 && zip(summaries, names).allSatisfy { $0.contains($1) })
      // A family prefix and the actor filter.
      let byOperator = try await audit.queryEvents(
        .with {
          $0.filter.types = ["provider."]; $0.filter.actor = "operator:"
        })
      #expect(byOperator.events.count == 20)
      let nobody = try await audit.queryEvents(
        .with {
          $0.filter.types = ["provider."]; $0.filter.actor = "user:CN=nobody"
        })
      #expect(nobody.events.isEmpty && nobody.nextPageToken.isEmpty)
      // Bad input names the field.
      let big = await rpcError { _ = try await audit.queryEvents(.with { $0.pageSize = 6000 }) }
      #expect(big?.code == .invalidArgument && big?.message.contains("page_size") == true)
      let badToken = await rpcError { _ = try await audit.queryEvents(.with { $0.pageToken = "xyz" }) }
      #expect(badToken?.code == .invalidArgument && badToken?.message.contains("page_token") == true)
    }
  }

  @Test func sandboxIdentitiesAreRefused() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    let (cert, key) = try gw.sandboxCertificate("sb-audit")
    try await withAudit(gw, certificate: cert, key: key) { audit in
      let e = await rpcError { _ = try await audit.queryEvents(.init()) }
      #expect(e?.code == .permissionDenied)
      let w = await rpcError { try await audit.watchEvents(.init()) { r in for try await _ in r.messages {} } }
      #expect(w?.code == .permissionDenied)
    }
  }

  /// Point-in-time view: a deleted sandbox is shown as it was, with the seq it is as of.
  @Test func getSandboxAtShowsThePast() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    let id = try await gw.withClient { api in
      try await api.createSandbox(
        .with {
          $0.name = "past"; $0.labels = ["team": "a"]
        }
      ).sandbox.metadata.id
    }
    let createdAt = gw.running.store.log.headSeq
    try await gw.withClient { api in _ = try await api.deleteSandbox(.with { $0.name = "past" }) }
    try await withAudit(gw) { audit in
      let then = try await audit.getSandboxAt(
        .with {
          $0.name = "past"; $0.atSeq = createdAt
        })
      #expect(then.seq == createdAt)
      let view = try JSONSerialization.jsonObject(with: Data(then.sandboxJson.utf8)) as? [String: Any]
      #expect(view?["id"] as? String == id)
      #expect((view?["labels"] as? [String: String]) == ["team": "a"])
      // The creator is the caller that created it: the actor of its sandbox.requested record.
      let requested = try #require(try gw.running.store.log.records(from: 1).first { $0.type == "sandbox.requested" })
      #expect(!requested.actor.isEmpty)
      #expect(view?["createdBy"] as? String == requested.actor)
      #expect(try GatewayEvent.decode(requested).sandboxRequested.createdBy == requested.actor)
      // By time (the create record's own timestamp) and by id.
      let createdNs = try #require(try gw.running.store.log.record(at: createdAt)).timestampNs
      let byTime = try await audit.getSandboxAt(
        .with {
          $0.name = id; $0.atTimeNs = createdNs
        })
      #expect(byTime.seq == createdAt)
      let now = await rpcError {
        _ = try await audit.getSandboxAt(
          .with {
            $0.name = "past"; $0.atSeq = gw.running.store.log.headSeq
          })
      }
      #expect(now?.code == .notFound, "deleted by then")
      let both = await rpcError {
        _ = try await audit.getSandboxAt(
          .with {
            $0.name = "past"; $0.atSeq = 1; $0.atTimeNs = 1
          })
      }
      #expect(both?.code == .invalidArgument)
      let beyond = await rpcError {
        _ = try await audit.getSandboxAt(
          .with {
            $0.name = "past"; $0.atSeq = 1_000_000
          })
      }
      #expect(beyond?.code == .outOfRange)
    }
  }

  /// Runs `writers` tasks that each create `perWriter` providers (named `<prefix><w>-<i>`), then one last
  /// provider once they all finished, while a WatchEvents from `fromSeq` collects seqs; the watch stops once
  /// it has delivered that last event (nothing else writes by then). Returns the seqs in delivery order.
  func watchDuringWrites(_ gw: TestGateway, fromSeq: UInt64, writers: Int, perWriter: Int, prefix: String) async throws -> [UInt64] {
    let finalHead = DoneFlag()
    let writing = Task {
      try await withThrowingTaskGroup(of: Void.self) { group in
        for w in 0..<writers {
          group.addTask { try await createProviders(gw, (0..<perWriter).map { "\(prefix)\(w)-\($0)" }) }
        }
        try await group.waitForAll()
      }
      finalHead.set(gw.running.store.log.headSeq + 1)
      try await createProviders(gw, ["last"])
    }
    let seen: [UInt64] = try await withAudit(gw) { audit in
      try await audit.watchEvents(.with { $0.fromSeq = fromSeq }) { response in
        var seqs: [UInt64] = []
        for try await event in response.messages {
          seqs.append(event.seq)
          if let head = finalHead.value, event.seq >= head { break }
        }
        return seqs
      }
    }
    try await writing.value
    return seen
  }

  /// WatchEvents from the start while writers append: every seq exactly once, in order, history then live.
  @Test func watchDeliversEverySeqOnceDuringConcurrentWrites() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    try await createProviders(gw, (0..<10).map { "before\($0)" })
    let seen = try await watchDuringWrites(gw, fromSeq: 0, writers: 4, perWriter: 25, prefix: "w")
    #expect(seen.first == 1)
    #expect(seen == Array(1...(seen.last ?? 0)), "every seq exactly once and in order")
    #expect(seen.count >= 110)
  }

  /// A history longer than WatchEvents' catch-up chunks (read and written a chunk at a time) hands over to the
  /// live subscription without a gap or a duplicate, while writers append.
  @Test func watchCatchesUpThroughChunksWithoutGapOrDuplicate() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    let log = gw.running.store.log
    for b in 0..<7 {  // 3,500 exec records: three full chunks and a partial one behind the head
      let batch = (0..<500).map { i in
        GatewayEvent(
          .execStarted(
            .with {
              $0.sandboxID = "sb"; $0.execID = "e\(b)-\(i)"; $0.command = ["true"]
            })
        )
        .newEvent(actor: "system", requestID: "")
      }
      _ = try await log.append(batch)
    }
    let seen = try await watchDuringWrites(gw, fromSeq: 1, writers: 3, perWriter: 20, prefix: "c")
    #expect(seen.count >= 3500 + 61)
    #expect(seen == Array(1...(seen.last ?? 0)), "every seq exactly once and in order")
  }
}

/// A value set once by one task and read by another.
final class DoneFlag: @unchecked Sendable {
  private let lock = NSLock()
  private var head: UInt64?
  func set(_ v: UInt64) { lock.withLock { head = v } }
  var value: UInt64? { lock.withLock { head } }
}
