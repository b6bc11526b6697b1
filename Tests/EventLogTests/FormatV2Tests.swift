import CLMDB
import Foundation
import Testing

@testable import EventLog

/// Record format version 2 and later (issue 14): round trip, logs with v1 and v2/v3 records, chain checkpoints.
@Suite struct FormatV2Tests {
  /// Events exercising every field: unicode, empty actor/request id, payload versions, raw and compressed
  /// bodies, a large payload, explicit timestamps.
  static func variedEvents(_ n: Int) -> [NewEvent] {
    var out: [NewEvent] = []
    for i in 0..<n {
      let type: String = i % 3 == 0 ? "sandbox.created" : "thing.ünïcödé.\(i % 5)"
      let kind: String = i % 2 == 0 ? "sandbox" : "prövider"
      let actor: String = i % 4 == 0 ? "" : "user-\(i)"
      let request: String = i % 5 == 0 ? "" : "req-\(i)"
      let ts: UInt64 = 1_700_000_000_000_000_000 + UInt64(i) * 1_000_003
      var e = event(
        type, kind: kind, id: "id-\(i % 7)", actor: actor, request: request, payload: "", ts: ts,
        version: UInt16(1 + i % 3))
      switch i % 4 {
      case 0: e.payload = noise(40 + i, seed: UInt64(i + 1))  // incompressible: raw body
      case 1: e.payload = jsonPayload(i)
      case 2: e.payload = []
      default:
        let unit = "abc\(i)"
        e.payload = Array(String(repeating: unit, count: i % 9 == 0 ? 30_000 : 20).utf8)
      }
      out.append(e)
    }
    return out
  }

  static func same(_ r: EventRecord, _ e: NewEvent, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.type == e.type, sourceLocation: sourceLocation)
    #expect(r.aggregate == e.aggregate, sourceLocation: sourceLocation)
    #expect(r.actor == e.actor, sourceLocation: sourceLocation)
    #expect(r.requestID == e.requestID, sourceLocation: sourceLocation)
    #expect(r.payloadVersion == e.payloadVersion, sourceLocation: sourceLocation)
    #expect(r.payload == e.payload, sourceLocation: sourceLocation)
    #expect(r.timestampNs == e.timestampNs, sourceLocation: sourceLocation)
  }

  static func stored(_ log: EventLog, _ seq: UInt64) throws -> [UInt8]? {
    let dbs = log.shared.env.dbs
    return try log.shared.env.withRead { txn in try txn.get(dbs.events, seqKey(seq)) }
  }

  static func checkpoint(_ log: EventLog, _ seq: UInt64) throws -> [UInt8]? {
    guard let chain = log.shared.env.dbs.chain else { return nil }
    return try log.shared.env.withRead { txn in try txn.get(chain, seqKey(seq)) }
  }

  @Test func roundTripWithAndWithoutDictionary() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let events = Self.variedEvents(150)
    do {
      let log = try openLog(tmp.log)
      try await log.append(Array(events[0..<70]))
      try log.trainDictionary(sampleLimit: 70, dictionarySize: 4096)
      for e in events[70...] { try await log.append([e]) }
      log.close()
    }
    let log = try openLog(tmp.log) { $0.readOnly = true }
    defer { log.close() }
    let all = try log.records(from: 1)
    #expect(all.count == events.count)
    for (r, e) in zip(all, events) { Self.same(r, e) }
    #expect(all[0].previousHash == RecordFormat.zeroHash)
    for (a, b) in zip(all, all.dropFirst()) { #expect(b.previousHash == a.hash) }
    #expect(all.last?.hash == log.headHash)
    let withDictionary = all.filter { $0.seq > 70 && $0.dictionaryID == 1 }.count
    #expect(withDictionary > 40)
    // Every stored value is v3 (the writer's format), and at least 40 bytes smaller than the v1 encoding of
    // the same event (its payload compressed at the same level as the body: no dictionary for seqs 1...6).
    let compressor = try Compressor(level: EventLog.Options().compressionLevelWithoutDictionary)
    for seq: UInt64 in 1...6 {
      let v = try #require(try Self.stored(log, seq))
      #expect(v.first == 3)
      let e = events[Int(seq) - 1]
      let c = try compressor.compress(e.payload, dict: nil)
      let v1 = RecordFormat.encodeV1(
        seq: seq, timestampNs: 0, event: e, dictionaryID: 0, storedPayload: c.bytes, raw: c.raw,
        previousHash: RecordFormat.zeroHash)
      #expect(v.count + 40 <= v1.count, "seq \(seq): v3 \(v.count) bytes, v1 \(v1.count)")
    }
    // Random access (chain hash recomputed from the nearest checkpoint) agrees with the sequential read.
    let seqs: [UInt64] = [1, 2, 31, 32, 33, 63, 64, 65, 99, 149, 150]
    for seq in seqs {
      let r = try #require(try log.record(at: seq))
      #expect(r == all[Int(seq) - 1], "seq \(seq)")
    }
    // Filtered and chunked reads carry the chain too.
    let filtered = try log.records(from: 40, filter: EventFilter(aggregateKind: "prövider"))
    let expectedCount = all.filter { $0.seq >= 40 && $0.aggregate.kind == "prövider" }.count
    #expect(filtered.count == expectedCount)
    for r in filtered { #expect(r == all[Int(r.seq) - 1]) }
    var reader = log.read(from: 5, chunkSize: 7)
    var n = 5
    while let r = try reader.next() {
      #expect(r == all[n - 1])
      n += 1
    }
    #expect(n == 151)
    // Checkpoints every interval, each intact and equal to the chain.
    for s in [32, 64, 96, 128] {
      let v = try #require(try Self.checkpoint(log, UInt64(s)))
      let h = v.withUnsafeBytes { ChainCheckpoints.hash($0, seq: UInt64(s)) }
      #expect(h == all[s - 1].hash)
    }
    #expect(try Self.checkpoint(log, 33) == nil)
    #expect(try log.verify().isOK)
  }

  /// A log written by an older build (v1 records, no `chain` database, format 1) is read as it is, then
  /// appended to in the current format (v3): one chain across both, verify passes, nothing old is rewritten.
  @Test func mixedV1AndV2LogVerifies() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let events = Self.variedEvents(90)
    var v1Values: [[UInt8]] = []
    do {
      let log = try openLog(tmp.log)
      let env = log.shared.env
      let dbs = env.dbs
      let compressor = try Compressor(level: 3)
      var prev = RecordFormat.zeroHash
      for (i, e) in events[0..<40].enumerated() {
        let seq = UInt64(i + 1)
        let c = try compressor.compress(e.payload, dict: nil)
        v1Values.append(
          RecordFormat.encodeV1(
            seq: seq, timestampNs: e.timestampNs!, event: e, dictionaryID: 0, storedPayload: c.bytes,
            raw: c.raw, previousHash: prev))
        prev = RecordFormat.chainHash(previousHash: prev, seq: seq, timestampNs: e.timestampNs!, event: e)
      }
      let head = prev
      let values = v1Values
      try env.withWrite { txn in
        for (i, v) in values.enumerated() { try txn.put(dbs.events, seqKey(UInt64(i + 1)), v) }
        try txn.put(dbs.meta, MetaKey.headSeq, seqKey(40))
        try txn.put(dbs.meta, MetaKey.headHash, head)
        try txn.put(dbs.meta, MetaKey.format, [0, 0, 0, 1])
        try check(mdb_drop(txn.ptr, dbs.chain!, 1), "mdb_drop")
      }
      log.close()
    }
    do {  // As an older build left it: read-only, no chain database.
      let ro = try openLog(tmp.log) { $0.readOnly = true }
      #expect(ro.shared.env.dbs.chain == nil)
      let old = try ro.records(from: 1)
      #expect(old.count == 40)
      for (r, e) in zip(old, events) { Self.same(r, e) }
      #expect(try ro.verify().isOK)
      ro.close()
    }
    do {
      let log = try openLog(tmp.log)
      try await log.append(Array(events[40..<60]))
      for e in events[60...] { try await log.append([e]) }
      let dbs = log.shared.env.dbs
      let format = try log.shared.env.withRead { txn in try txn.get(dbs.meta, MetaKey.format) }
      #expect(format == [0, 0, 0, 3])
      let last = try log.shared.env.withRead { txn in try ChainCheckpoints.lastSeq(txn, dbs) }
      #expect(last == 64)
      let anchor = try #require(try Self.checkpoint(log, 40))  // anchored at the old head
      let anchorHash = anchor.withUnsafeBytes { ChainCheckpoints.hash($0, seq: 40) }
      #expect(anchorHash == v1Hash(events, 40))
      for (i, v) in v1Values.enumerated() { #expect(try Self.stored(log, UInt64(i + 1)) == v) }  // untouched
      #expect(try Self.stored(log, 41)?.first == 3)
      log.close()
    }
    let log = try openLog(tmp.log) { $0.readOnly = true }
    defer { log.close() }
    let all = try log.records(from: 1)
    #expect(all.count == 90)
    for (r, e) in zip(all, events) { Self.same(r, e) }
    for (a, b) in zip(all, all.dropFirst()) { #expect(b.previousHash == a.hash) }
    #expect(try log.record(at: 41) == all[40])
    #expect(try log.record(at: 50) == all[49])
    #expect(try log.record(at: 40) == all[39])
    let report = try log.verify()
    #expect(report.isOK, "\(String(describing: report.firstBad))")
    #expect(report.records == 90)
    #expect(report.lastHash == log.headHash)
  }

  /// The chain hash of record `n` of `events`, computed independently of the log.
  func v1Hash(_ events: [NewEvent], _ n: Int) -> [UInt8] {
    var h = RecordFormat.zeroHash
    for (i, e) in events[0..<n].enumerated() {
      h = RecordFormat.chainHash(previousHash: h, seq: UInt64(i + 1), timestampNs: e.timestampNs!, event: e)
    }
    return h
  }

  /// A damaged checkpoint is named by verify; readers fall back to an earlier one and still get the right
  /// chain hashes. A checkpoint with a valid checksum but another hash (or a forged v2 record) is reported
  /// as a broken chain starting after the last confirmed checkpoint.
  @Test func damagedCheckpointAndForgedRecord() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    let events = Self.variedEvents(100)
    try await log.append(events)
    let all = try log.records(from: 1)
    let env = log.shared.env
    let chain = try #require(env.dbs.chain)
    let original64 = try #require(try Self.checkpoint(log, 64))

    var damaged = original64
    damaged[5] ^= 0x40
    try env.withWrite { txn in try txn.put(chain, seqKey(64), damaged) }
    var r = try log.verify()
    #expect(r.firstBad?.seq == 64, "\(String(describing: r.firstBad))")
    #expect(r.firstBad?.reason.contains("checkpoint at seq 64 is damaged") == true)
    #expect(try log.record(at: 70) == all[69])  // walks from checkpoint 32 instead
    #expect(try log.record(at: 65) == all[64])
    #expect(try log.records(from: 66, limit: 3) == Array(all[65..<68]))

    let wrong = ChainCheckpoints.value(seq: 64, hash: all[10].hash)
    try env.withWrite { txn in try txn.put(chain, seqKey(64), wrong) }
    r = try log.verify()
    #expect(r.firstBad?.seq == 33, "\(String(describing: r.firstBad))")
    #expect(r.firstBad?.reason.contains("33...64") == true)

    try env.withWrite { txn in try txn.put(chain, seqKey(64), original64) }
    #expect(try log.verify().isOK)

    // A v2 record re-encoded with other content and a valid checksum.
    let original40 = try #require(try Self.stored(log, 40))
    var forgedEvent = events[39]
    forgedEvent.payload = Array("forged".utf8)
    let body = RecordFormat.body(of: forgedEvent)
    let forged = RecordFormat.encodeV2(
      seq: 40, timestampNs: all[39].timestampNs, dictionaryID: 0, stored: body, raw: true, bodyLength: body.count)
    let eventsDB = env.dbs.events
    try env.withWrite { txn in try txn.put(eventsDB, seqKey(40), forged) }
    r = try log.verify()
    #expect(r.firstBad?.seq == 33, "\(String(describing: r.firstBad))")
    #expect(r.firstBad?.reason.contains("33...64") == true)
    #expect(try log.record(at: 40)?.payload == Array("forged".utf8))
    try env.withWrite { txn in try txn.put(eventsDB, seqKey(40), original40) }
    #expect(try log.verify().isOK)
  }
}
