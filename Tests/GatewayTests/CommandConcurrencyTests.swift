import EventLog
import Foundation
import GRPCCore
import Gateway
import OpenShellAPI
import Projections
import Testing

/// Exact answers under concurrency (issue 16): decisions on a state that includes every earlier accepted
/// command, idempotency keyed on (request id, RPC, target).
@Suite struct CommandConcurrencyTests {
  @Test func aRequestIDReusedByAnotherRPCOrTargetIsInvalidAndChangesNothing() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      let created = try await api.createSandbox(
        .with {
          $0.name = "once"; $0.requestID = "r1"
        }
      ).sandbox
      // A Delete that reuses the Create's id used to report ACCEPTED and delete nothing.
      do {
        _ = try await api.deleteSandbox(
          .with {
            $0.name = "once"; $0.requestID = "r1"
          })
        Issue.record("a Delete reusing a Create's request id was accepted")
      } catch let e as RPCError {
        #expect(e.code == .invalidArgument && e.message.contains("already used by CreateSandbox of /once"), "\(e)")
      }
      #expect(try await api.getSandbox(.with { $0.name = "once" }).sandbox.metadata.id == created.metadata.id)
      // The same request again is a retry.
      #expect(
        try await api.createSandbox(
          .with {
            $0.name = "once"; $0.requestID = "r1"
          }
        ).sandbox.metadata.id == created.metadata.id)
      // A Create that reuses a Delete's id used to answer INTERNAL ("recorded", though nothing was).
      _ = try await api.createSandbox(.with { $0.name = "gone" })
      _ = try await api.deleteSandbox(
        .with {
          $0.name = "gone"; $0.requestID = "d1"
        })
      #expect(
        await rpcCode {
          _ = try await api.createSandbox(
            .with {
              $0.name = "fresh"; $0.requestID = "d1"
            })
        } == .invalidArgument)
      #expect(await rpcCode { _ = try await api.getSandbox(.with { $0.name = "fresh" }) } == .notFound)

      // CreateProvider reusing an id for another provider used to answer OK with the first provider.
      func provider(_ name: String) -> Openshell_V1_CreateProviderRequest {
        .with {
          $0.provider = .with {
            $0.metadata.name = name; $0.type = "claude"; $0.credentials = ["ANTHROPIC_API_KEY": "k-\(name)"]
          }
          $0.requestID = "p1"
        }
      }
      let a = try await api.createProvider(provider("alpha")).provider
      #expect(try await api.createProvider(provider("alpha")).provider.metadata.id == a.metadata.id)
      #expect(await rpcCode { _ = try await api.createProvider(provider("beta")) } == .invalidArgument)
      #expect(await rpcCode { _ = try await api.getProvider(.with { $0.name = "beta" }) } == .notFound)
    }
    await gw.stop()
  }

  @Test func concurrentRetriesOfOneRequestReturnWhatTheFirstDid() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      let ids = try await withThrowingTaskGroup(of: String.self) { group in
        for _ in 0..<8 {
          group.addTask {
            try await api.createSandbox(
              .with {
                $0.name = "same"; $0.requestID = "r-same"
              }
            ).sandbox.metadata.id
          }
        }
        return try await group.reduce(into: [String]()) { $0.append($1) }
      }
      #expect(ids.count == 8 && Set(ids).count == 1, "\(ids)")
      let requested = try gw.running.store.log.records(from: 1, filter: EventFilter(types: ["sandbox.requested"]))
      #expect(requested.count == 1)
    }
    await gw.stop()
  }

  /// GetSandbox reads the projection without entering the store's actor (issue 14); it still sees every
  /// CreateSandbox that has returned (read-your-writes), also while other creates are being applied, and
  /// the store's own reads agree with it.
  @Test func getSandboxSeesEveryCreateThatReturned() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      let pairs = try await withThrowingTaskGroup(of: (String, String).self) { group in
        for i in 0..<24 {
          group.addTask {
            let created = try await api.createSandbox(.with { $0.name = "ryw-\(i)" }).sandbox
            let got = try await api.getSandbox(.with { $0.name = "ryw-\(i)" }).sandbox
            #expect(got.metadata.name == "ryw-\(i)")
            return (created.metadata.id, got.metadata.id)
          }
        }
        return try await group.reduce(into: [(String, String)]()) { $0.append($1) }
      }
      #expect(pairs.count == 24 && pairs.allSatisfy { !$0.0.isEmpty && $0.0 == $0.1 }, "\(pairs)")
      let ids = try gw.running.store.read { state in Set(state.sandboxes.values.filter { $0.name.hasPrefix("ryw-") }.map(\.id)) }
      #expect(ids == Set(pairs.map(\.0)))
      #expect(await rpcCode { _ = try await api.getSandbox(.with { $0.name = "ryw-none" }) } == .notFound)
    }
    await gw.stop()
  }

  @Test func stopAndDeleteRacingAnswerAsIfOneAfterTheOther() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      for i in 0..<12 {
        let name = "race-\(i)"
        _ = try await api.createSandbox(.with { $0.name = name })
        async let stop = rpcCode { _ = try await api.stopSandbox(.with { $0.name = name }) }
        async let delete = rpcCode { _ = try await api.deleteSandbox(.with { $0.name = name }) }
        let (s, d) = await (stop, delete)
        #expect(d == nil, "delete of \(name): \(String(describing: d))")
        // Stop either ran first (OK) or found the sandbox deleted (NOT_FOUND) — never ALREADY_EXISTS.
        #expect(s == nil || s == .notFound, "stop of \(name): \(String(describing: s))")
        #expect(await rpcCode { _ = try await api.getSandbox(.with { $0.name = name }) } == .notFound)
      }
    }
    await gw.stop()
  }

  @Test func deleteWorkspaceNeverLeavesObjectsInADeletedWorkspace() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      var outcomes: Set<String> = []
      for i in 0..<16 {
        let ws = "w\(i)"
        _ = try await api.createWorkspace(.with { $0.name = ws })
        async let create = rpcCode {
          _ = try await api.createSandbox(
            .with {
              $0.name = "s"; $0.workspaceScope = .ws(ws)
            })
        }
        async let delete = rpcCode { _ = try await api.deleteWorkspace(.with { $0.name = ws }) }
        let (c, d) = await (create, delete)
        let state = await gw.running.store.state
        let sandboxes = state.sandboxes.values.filter { $0.workspace == ws }
        if state.workspaces[ws] == nil {
          #expect(sandboxes.isEmpty, "workspace \(ws) deleted with sandboxes in it")
          #expect(d == nil && c != nil, "create \(String(describing: c)) delete \(String(describing: d))")
          outcomes.insert("deleted first")
        } else {
          #expect(sandboxes.count == 1 && c == nil && d == .failedPrecondition, "create \(String(describing: c)) delete \(String(describing: d))")
          outcomes.insert("created first")
        }
      }
      #expect(!outcomes.isEmpty)
    }
    await gw.stop()
  }
}

/// WatchSandbox never drops a message (issue 16: it buffered 10,000 and silently dropped the oldest; now
/// every write awaits the transport). Note: this in-process client buffers whatever arrives, so it does not
/// reproduce a client too slow to drain HTTP/2 windows; it checks completeness and order under volume.
@Suite struct WatchBackpressureTests {
  @Test func aSlowWatcherGetsEveryEventInOrder() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      let s = try await api.createSandbox(.with { $0.name = "watched" }).sandbox
      let total = 6_000
      let cursors = try await api.watchSandbox(
        .with {
          $0.sandbox = "watched"; $0.followEvents = true
        }
      ) { response in
        var cursors: [UInt64] = []
        var iterator = response.messages.makeAsyncIterator()
        // The first message (current status) arrives, then the client stops reading while 6,000 events land.
        guard let first = try await iterator.next() else { return cursors }
        #expect(first.sandbox.metadata.id == s.metadata.id)
        for batch in 0..<(total / 1000) {
          let events = (0..<1000).map { i in
            GatewayEvent(
              (batch * 1000 + i) % 2 == 0
                ? .sandboxProviderAttached(
                  .with {
                    $0.sandboxID = s.metadata.id; $0.provider = "p"
                  })
                : .sandboxProviderDetached(
                  .with {
                    $0.sandboxID = s.metadata.id; $0.provider = "p"
                  }))
          }
          try await gw.running.store.record(events)
        }
        let last = try #require(try gw.running.store.log.records(from: 1, filter: EventFilter(aggregate: .sandbox(s.metadata.id))).last?.seq)
        try await Task.sleep(for: .milliseconds(500))
        // Read up to the last record (a dropping server would still deliver the newest ones, then stop).
        while let m = try await iterator.next() {
          guard case .event? = m.payload, let c = UInt64(m.cursor) else { continue }
          cursors.append(c)
          if c >= last { break }
        }
        return cursors
      }
      #expect(cursors.count == total, "got \(cursors.count) of \(total) events")
      // Exactly the sandbox's records, in seq order (other records, e.g. audit checkpoints, lie in between).
      let expected = try gw.running.store.log.records(from: 1, filter: EventFilter(aggregate: .sandbox(s.metadata.id)))
        .map(\.seq).filter { $0 >= cursors.first ?? 0 }
      #expect(cursors == expected, "a gap or reordering in the cursors")
    }
    await gw.stop()
  }
}
