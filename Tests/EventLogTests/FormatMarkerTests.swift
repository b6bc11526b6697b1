import Foundation
import Testing

@testable import EventLog

/// The log's format marker (`meta` `format`) says which record versions the log holds: it is raised to 3 in
/// the transaction of the first v3 record, never by a writable open alone (issue: `openshell-replay rebuild`
/// raised a v2 log to 3 by writing a snapshot, and the older build that wrote the log then refused it).
@Suite struct FormatMarkerTests {
  static func marker(_ log: EventLog) throws -> [UInt8]? {
    let dbs = log.shared.env.dbs
    return try log.shared.env.withRead { try $0.get(dbs.meta, MetaKey.format) }
  }

  /// A log as a format-2 build left it: `count` v2 records, marker 2.
  static func v2Log(_ dir: String, _ events: [NewEvent]) async throws {
    let log = try openLog(dir)
    try await log.append(events)
    let values = try log.records(from: 1).map { try FormatV3Tests.reencode($0, as: 2, log: log) }
    let env = log.shared.env
    let dbs = env.dbs
    try env.withWrite { txn in
      for (i, v) in values.enumerated() { try txn.put(dbs.events, seqKey(UInt64(i + 1)), v) }
      try txn.put(dbs.meta, MetaKey.format, [0, 0, 0, 2])
    }
    log.close()
  }

  @Test func writableOpenAndSnapshotKeepAV2LogAtFormat2() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let events = FormatV2Tests.variedEvents(40)
    try await Self.v2Log(tmp.log, Array(events[0..<30]))
    // A rebuild: writable open, a snapshot, close. Twice (a second open must not raise it either).
    for round in 0..<2 {
      let log = try openLog(tmp.log)
      try log.saveSnapshot(name: "state.v1", seq: log.headSeq, bytes: Array("state \(round)".utf8))
      #expect(try Self.marker(log) == [0, 0, 0, 2], "round \(round)")
      log.close()
    }
    do {
      let ro = try openLog(tmp.log) { $0.readOnly = true }
      defer { ro.close() }
      #expect(try Self.marker(ro) == [0, 0, 0, 2])
      #expect(try ro.verify().isOK)
      #expect(try FormatV2Tests.stored(ro, 30)?.first == 2, "the records are the older build's")
    }
    // The first v3 record raises it, in the same commit; later appends keep it.
    let log = try openLog(tmp.log)
    try await log.append([events[30]])
    #expect(try Self.marker(log) == [0, 0, 0, 3])
    #expect(try FormatV2Tests.stored(log, 31)?.first == 3)
    try await log.append(Array(events[31...]))
    #expect(try Self.marker(log) == [0, 0, 0, 3])
    #expect(try log.verify().isOK)
    log.close()
  }

  @Test func aNewLogIsMarkedWithItsFirstRecord() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    do {
      let log = try openLog(tmp.log)
      #expect(try Self.marker(log) == nil, "empty: nothing to mark yet")
      log.close()
    }
    let log = try openLog(tmp.log)
    defer { log.close() }
    #expect(try log.verify().isOK)
    try await log.append([FormatV2Tests.variedEvents(1)[0]])
    #expect(try Self.marker(log) == [0, 0, 0, 3])
  }
}
