import Foundation
import Testing

@testable import EventLog

/// ``EventLog/visitRecords(from:through:limit:_:)`` (issue 12: the audit watch's borrowed history read)
/// against the owned reader: same fields for v1, v2 and v3 records, bounds, early stop, damage named.
@Suite struct BorrowedReadingTests {
  /// Every field of each borrowed record equals the owned record's, for all records of `log` from `from`,
  /// visited in chunks of `limit`.
  static func expectSameAsOwned(
    _ log: EventLog, _ owned: [EventRecord], from: UInt64 = 1, limit: Int, sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    var seen: [UInt64] = []
    var next = from
    let head = log.headSeq
    while next <= head {
      let last = try log.visitRecords(from: next, through: head, limit: limit) { b in
        let r = owned[Int(b.seq) - 1]
        #expect(b.seq == r.seq && b.timestampNs == r.timestampNs && b.payloadVersion == r.payloadVersion, sourceLocation: sourceLocation)
        #expect(b.type == r.type && b.kind == r.aggregate.kind && b.actor == r.actor, sourceLocation: sourceLocation)
        #expect(b.idString == r.aggregate.id && b.requestIDString == r.requestID, sourceLocation: sourceLocation)
        #expect(Array(b.payload) == r.payload, "seq \(b.seq)", sourceLocation: sourceLocation)
        #expect(b.dictionaryID == r.dictionaryID && b.storedSize == r.storedSize, sourceLocation: sourceLocation)
        let copy = b.unchainedRecord()
        #expect(copy.type == r.type && copy.aggregate == r.aggregate && copy.payload == r.payload && copy.requestID == r.requestID)
        #expect(copy.hash == [UInt8](repeating: 0, count: 32), "no chain hash is claimed", sourceLocation: sourceLocation)
        seen.append(b.seq)
        return true
      }
      let end = try #require(last, sourceLocation: sourceLocation)
      #expect(end - next + 1 <= UInt64(limit), sourceLocation: sourceLocation)
      next = end + 1
    }
    #expect(seen == Array(from...head), sourceLocation: sourceLocation)
  }

  /// v3 records with and without a dictionary, unicode header strings, empty actors and request ids: the
  /// borrowed fields are the owned ones; `limit`, `through` and an early stop bound the visit; nothing is
  /// visited past the head or in an empty range.
  @Test func borrowedFieldsEqualOwnedRecordsAndBoundsHold() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    let events = FormatV2Tests.variedEvents(300)
    try await log.append(Array(events[0..<100]))
    try log.trainDictionary(sampleLimit: 100, dictionarySize: 4096)
    try await log.append(Array(events[100...]))
    let owned = try log.records(from: 1)
    #expect(owned.count == 300 && owned.contains { $0.dictionaryID != 0 })
    for limit in [1, 7, 2048] { try Self.expectSameAsOwned(log, owned, limit: limit) }
    try Self.expectSameAsOwned(log, owned, from: 123, limit: 50)

    var count = 0
    let last = try log.visitRecords(from: 10, through: 20, limit: 100) { _ in
      count += 1
      return true
    }
    #expect(last == 20 && count == 11)
    count = 0
    let stopped = try log.visitRecords(from: 10, through: 300, limit: 100) { b in
      count += 1
      return b.seq < 15
    }
    #expect(stopped == 15 && count == 6, "the record that stops the visit is the last one visited")
    #expect(try log.visitRecords(from: 301, through: 400, limit: 10) { _ in true } == nil)
    #expect(try log.visitRecords(from: 20, through: 10, limit: 10) { _ in true } == nil)
    #expect(try log.visitRecords(from: 0, through: 2, limit: 10) { _ in true } == 2, "seq 0 reads from 1")
  }

  /// A record whose stored bytes are damaged is refused naming its seq; the records before it were visited.
  @Test func damagedRecordIsNamed() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    try await log.append(FormatV2Tests.variedEvents(60))
    var v = try #require(try FormatV2Tests.stored(log, 33))
    v[v.count - 6] ^= 0x40
    let damaged = v
    let env = log.shared.env
    try env.withWrite { try $0.put(env.dbs.events, seqKey(33), damaged) }
    var visited: [UInt64] = []
    let e = expectEventLogError(.corrupt) {
      _ = try log.visitRecords(from: 1, through: 60, limit: 100) { b in
        visited.append(b.seq)
        return true
      }
    }
    #expect(e?.seq == 33 && e?.message.contains("record 33") == true, "\(String(describing: e))")
    #expect(visited == Array(1...32))
  }

  /// A record missing from the `events` database (its key gone, the others intact) is `.corrupt` naming it —
  /// inside the range, at its start, at its end with later records stored, and at the head — never silently
  /// left out: the owned reader's chain finds such a gap, the borrowing reader computes no chain.
  @Test func missingRecordIsNamedNotSkipped() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    try await log.append(FormatV2Tests.variedEvents(60))
    let env = log.shared.env
    for seq: UInt64 in [33, 50, 60] {
      #expect(try env.withWrite { try $0.delete(env.dbs.events, seqKey(seq)) })
    }
    func visit(_ from: UInt64, _ through: UInt64) -> (EventLogError?, [UInt64]) {
      var visited: [UInt64] = []
      let e = expectEventLogError(.corrupt) {
        _ = try log.visitRecords(from: from, through: through, limit: 100) { b in
          visited.append(b.seq)
          return true
        }
      }
      return (e, visited)
    }
    var (e, visited) = visit(1, 60)
    #expect(e?.seq == 33 && e?.message == "record 33 is missing (next stored seq is 34)", "\(String(describing: e))")
    #expect(visited == Array(1...32))
    (e, visited) = visit(33, 40)
    #expect(e?.seq == 33 && visited.isEmpty, "\(String(describing: e))")
    (e, visited) = visit(45, 50)
    #expect(e?.seq == 50 && e?.message.contains("next stored seq is 51") == true && visited == Array(45...49), "\(String(describing: e))")
    (e, visited) = visit(51, 70)
    #expect(e?.seq == 60 && e?.message == "record 60 is missing (next stored seq is none)" && visited == Array(51...59), "\(String(describing: e))")
    // Ranges without a missing record still read, also past the head.
    #expect(try log.visitRecords(from: 34, through: 49, limit: 100) { _ in true } == 49)
    #expect(try log.visitRecords(from: 61, through: 70, limit: 100) { _ in true } == nil)
  }

  /// A v3 record whose stored bytes are intact (CRC right) but whose header strings are not UTF-8 — a
  /// truncated sequence, a stray continuation byte, an overlong form, a surrogate, in each of type, kind, id,
  /// actor and request id, short and longer than the interner's 64 bytes — is `.corrupt` naming its seq,
  /// never handed to `body` (whose bytes would go to clients as proto3 strings).
  @Test func invalidUTF8HeaderStringsAreCorrupt() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    try await log.append(FormatV2Tests.variedEvents(10))
    let env = log.shared.env
    let bad: [[UInt8]] = [[0x61, 0xC3], [0x80], [0xC0, 0xAF], [0xED, 0xA0, 0x80], Array(repeating: 0x61, count: 70) + [0xFF]]
    let good: [[UInt8]] = [Array("t.x".utf8), Array("kind".utf8), Array("id-1".utf8), Array("actor".utf8), Array("req".utf8)]
    var cases = 0
    for field in 0..<5 {
      for b in bad {
        var strings = good
        strings[field] = b
        var body: [UInt8] = []
        body.appendVarint(1)
        for s in strings { body.appendVarint(UInt64(s.count)) }
        for s in strings { body += s }
        body += Array("{}".utf8)
        let value = RecordFormat.encodeV3(
          seq: 5, timestampNs: 1_700_000_000_000_000_000, dictionaryID: 0, storage: .raw, stored: body, bodyLength: body.count)
        try env.withWrite { try $0.put(env.dbs.events, seqKey(5), value) }
        var visited: [UInt64] = []
        let e = expectEventLogError(.corrupt) {
          _ = try log.visitRecords(from: 1, through: 10, limit: 100) { r in
            visited.append(r.seq)
            return true
          }
        }
        #expect(e?.seq == 5 && e?.message.contains("invalid UTF-8") == true, "field \(field) \(b.prefix(4)): \(String(describing: e))")
        #expect(visited == [1, 2, 3, 4])
        cases += 1
      }
    }
    #expect(cases == 25)
  }
}
