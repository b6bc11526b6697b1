import EventLog
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import LogTools
import OpenShellAPI
import Projections
import Testing

@testable import Gateway

/// WatchEventBatches (many events per message) and the floor of the audit API (issue 12): batch boundaries
/// never drop or repeat a seq, history pages hand over to live records under concurrent writes, and a
/// `from_seq` below the oldest held record is OUT_OF_RANGE with the floor in the message.
@Suite struct AuditWatchBatchTests {
  typealias AuditClient = Openshell_Audit_V1_AuditService.Client<HTTP2ClientTransport.Posix>

  static func exec(_ tag: String, _ i: Int) -> NewEvent {
    GatewayEvent(
      .execStarted(
        .with {
          $0.sandboxID = "sb"; $0.execID = "\(tag)\(i)"; $0.command = ["true"]
        })
    )
    .newEvent(actor: "system", requestID: "")
  }

  /// History of several pages (not a multiple of the page size) while writers append one record per commit
  /// and in batches: the concatenated batches are 1…N exactly, every batch continues where the previous one
  /// ended, and history arrives many events per message.
  @Test func batchesNeverDropOrRepeatASeqUnderConcurrentWrites() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    let log = gw.running.store.log
    let history = 2 * AuditWatch.pageRecords + 777
    for b in 0..<(history / 500 + 1) {
      _ = try await log.append((0..<500).map { Self.exec("h\(b)-", $0) })
    }
    let writers = 3
    let perWriter = 150
    let finalSeq = DoneFlag()
    let writing = Task {
      try await withThrowingTaskGroup(of: Void.self) { group in
        for w in 0..<writers {
          group.addTask {
            for i in 0..<perWriter {
              // Single records and small bursts, so live batches of one and of several both occur.
              let n = i % 10 == 0 ? 25 : 1
              _ = try await log.append((0..<n).map { Self.exec("w\(w)-\(i)-", $0) })
            }
          }
        }
        try await group.waitForAll()
      }
      let last = try await log.append([Self.exec("last", 0)])
      finalSeq.set(last.upperBound)
    }
    let batches: [[UInt64]] = try await withAudit(gw) { audit in
      var options = CallOptions.defaults
      options.timeout = .seconds(120)
      return try await audit.watchEventBatches(.with { $0.fromSeq = 1 }, options: options) { response in
        var batches: [[UInt64]] = []
        for try await batch in response.messages {
          batches.append(batch.events.map(\.seq))
          if let end = finalSeq.value, batch.events.last.map({ $0.seq >= end }) == true { break }
        }
        return batches
      }
    }
    try await writing.value
    let seen = batches.flatMap { $0 }
    #expect(seen.count == Int(finalSeq.value ?? 0))
    #expect(seen == Array(1...(seen.last ?? 0)), "every seq exactly once and in order")
    #expect(!batches.contains { $0.isEmpty }, "no empty message")
    for (a, b) in zip(batches, batches.dropFirst()) {
      #expect(b.first == a.last.map { $0 + 1 }, "batch starting at \(b.first ?? 0) continues \(a.last ?? 0)")
    }
    #expect(batches.first.map(\.count) ?? 0 >= 1000, "history comes many events per message")
    #expect(batches.count < seen.count / 10, "\(batches.count) messages for \(seen.count) events")
  }

  /// Three history workers over eleven pages and a partial one while a writer appends: pages are written in
  /// page order, so the batches are 1…N exactly, each continuing the previous one.
  @Test func parallelHistoryWorkersWriteEveryPageInOrder() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    let log = gw.running.store.log
    let pages = 11
    for b in 0..<(pages * AuditWatch.pageRecords / 1000 + 1) {
      _ = try await log.append((0..<1000).map { Self.exec("p\(b)-", $0) })
    }
    let writing = Task {
      for i in 0..<200 { _ = try await log.append([Self.exec("live", i)]) }
      return log.headSeq
    }
    struct Enough: Error {}
    let watch = AuditWatch(log: log, matcher: try AuditMatcher(log, query: AuditQuery()), from: 1, workers: 3)
    var seen: [UInt64] = []
    var starts: [UInt64] = []
    var target: UInt64 = .max
    do {
      try await watch.run { batch in
        let events = try batch.message().events
        #expect(!events.isEmpty, "no empty batch")
        starts.append(events.first?.seq ?? 0)
        seen += events.map(\.seq)
        // Past the history pages: wait for the writer, then read up to its last record.
        if target == .max, seen.count > pages * AuditWatch.pageRecords { target = try await writing.value }
        if seen.last ?? 0 >= target { throw Enough() }
      }
    } catch is Enough {}
    #expect(seen == Array(1...(seen.last ?? 0)), "every seq exactly once and in order")
    #expect(seen.last ?? 0 >= target)
    #expect(starts.count >= pages, "at least one batch per page")
  }

  /// A from_seq within a page of UInt64.max (any operator can send one) is a watch that waits for records
  /// that far ahead: nothing is written, and the gateway does not trap on `from_seq + page` overflowing.
  @Test func fromSeqNearTheTopOfTheSeqRangeIsAWatchOfNothingYet() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    let log = gw.running.store.log
    _ = try await log.append((0..<10).map { Self.exec("t", $0) })
    for from in [UInt64.max, UInt64.max - UInt64(AuditWatch.pageRecords) + 1, UInt64.max - UInt64(AuditWatch.pageRecords)] {
      let watch = AuditWatch(log: log, matcher: try AuditMatcher(log, query: AuditQuery()), from: from)
      let running = Task {
        var written = 0
        try await watch.run { written += $0.count }
        return written
      }
      _ = try await log.append([Self.exec("after", 0)])
      try await Task.sleep(for: .milliseconds(200))
      running.cancel()
      #expect(try await running.value == 0, "from \(from)")
    }
  }

  // The cut by size (never inside or across events, every event once and in order) is tested on the wire
  // batches themselves: AuditWireTests.cutterKeepsEveryEventInOrderUnderTheSizeBound.

  /// A gateway whose oldest held record is 40 answers a from_seq below it OUT_OF_RANGE naming the floor, on
  /// QueryEvents, WatchEvents and WatchEventBatches; at the floor (or 0, meaning the floor) it serves.
  @Test func fromSeqBelowTheFloorIsOutOfRange() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    let log = gw.running.store.log
    _ = try await log.append((0..<60).map { Self.exec("f", $0) })
    let service = AuditService(log: log, floorSeq: 40)
    let op = CallerIdentity(kind: .operator, subject: "CN=test", fingerprint: nil)
    let context = ServerContext(
      descriptor: MethodDescriptor(fullyQualifiedService: "openshell.audit.v1.AuditService", method: "QueryEvents"), remotePeer: "test",
      localPeer: "test", cancellation: .init())
    try await CallerIdentity.$current.withValue(op) {
      let below = #expect(throws: RPCError.self) { try service.watch("WatchEvents", .with { $0.fromSeq = 39 }) }
      #expect(below?.code == .outOfRange && below?.message.contains("seq 40") == true, "\(String(describing: below))")
      let query = await #expect(throws: RPCError.self) { try await service.queryEvents(request: .with { $0.fromSeq = 1 }, context: context) }
      #expect(query?.code == .outOfRange && query?.message.contains("seq 40") == true, "\(String(describing: query))")
      let page = try await service.queryEvents(
        request: .with {
          $0.fromSeq = 0; $0.pageSize = 5
        }, context: context)
      #expect(page.floorSeq == 40 && page.events.first?.seq == 40, "0 starts at the floor")
      let watch = try service.watch("WatchEventBatches", .with { $0.fromSeq = 40 })
      #expect(watch.from == 40)
    }
  }
}
