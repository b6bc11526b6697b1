import EventLog
import Foundation
import LogTools
import OpenShellAPI
import Projections
import Testing

@testable import Gateway

/// The watch's borrowed history path (``EventLog/visitRecords(from:through:limit:_:)`` into
/// ``AuditWatch/Cutter``, issue 12) writes byte for byte the batches of the owned path (``EventLogReader`` and
/// ``EventRecord``), for every record of the fixture logs — fast summaries and the decoded kinds alike — and
/// for filters on time, actor and type.
@Suite struct AuditWatchBorrowedTests {
  static func fixtureLogs() throws -> [(name: String, dir: URL)] {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let names = try FileManager.default.contentsOfDirectory(atPath: repo.appendingPathComponent("Fixtures").path).sorted()
    return names.map { ($0, repo.appendingPathComponent("Fixtures/\($0)/log")) }
  }

  /// The batches of records `1...head` cut at `limit` bytes, read owned or borrowed.
  static func batches(_ log: EventLog, _ query: AuditQuery, borrowed: Bool, limit: Int) throws -> [[UInt8]] {
    var matcher = try AuditMatcher(log, query: query)
    var cutter = AuditWatch.Cutter(ocsf: false, limit: limit)
    var out: [[UInt8]] = []
    if borrowed {
      var next: UInt64 = 1
      while next <= log.headSeq {
        guard
          let last = try log.visitRecords(
            from: next, through: log.headSeq, limit: 16,
            { record in
              if let full = try cutter.add(record, &matcher) { out.append(full.bytes) }
              return true
            })
        else { break }
        next = last + 1
      }
    } else {
      var reader = log.read(from: 1, through: log.headSeq, filter: matcher.logFilter, chunkSize: 16)
      while let record = try reader.next() {
        if let full = try cutter.add(record, &matcher) { out.append(full.bytes) }
      }
    }
    if !cutter.batch.isEmpty { out.append(cutter.take().bytes) }
    return out
  }

  @Test func borrowedHistoryWritesTheOwnedPathsBytes() throws {
    var compared = 0
    for (name, source) in try Self.fixtureLogs() {
      let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("watch-borrowed-\(getpid())-\(name)")
      try? FileManager.default.removeItem(at: tmp)
      try FileManager.default.copyItem(at: source, to: tmp)
      defer { try? FileManager.default.removeItem(at: tmp) }
      let log = try EventLog.open(directory: tmp.path)
      defer { log.close() }
      let records = try log.records(from: 1)
      let middle = records[records.count / 2].timestampNs
      let actor = try #require(records.map(\.actor).first { $0 != "system" && !$0.isEmpty } ?? records.first?.actor)
      var queries: [AuditQuery] = [AuditQuery()]
      var q = AuditQuery()
      q.sinceNs = middle
      queries.append(q)
      q = AuditQuery()
      q.untilNs = middle
      q.actor = String(actor.prefix(4))
      queries.append(q)
      q = AuditQuery()
      q.types = ["sandbox.", "gateway.initialized", "provider."]
      queries.append(q)
      for (i, query) in queries.enumerated() {
        for limit in [600, 1 << 20] {
          let owned = try Self.batches(log, query, borrowed: false, limit: limit)
          let borrowed = try Self.batches(log, query, borrowed: true, limit: limit)
          #expect(borrowed == owned, "\(name) query \(i) limit \(limit)")
          if i == 0 { #expect(owned.reduce(0) { $0 + ((try? AuditWireBatch.count(of: $1)) ?? 0) } == records.count, "\(name)") }
          compared += owned.count
        }
      }
    }
    #expect(compared > 20)
  }
}

extension AuditWireBatch {
  /// Events in an encoded `WatchEventsResponse` (the test decodes it with swift-protobuf).
  static func count(of bytes: [UInt8]) throws -> Int {
    try Openshell_Audit_V1_WatchEventsResponse(serializedBytes: bytes).events.count
  }
}
