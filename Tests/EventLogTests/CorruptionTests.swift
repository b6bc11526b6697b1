import CLMDB
import Foundation
import Testing

@testable import EventLog

@Suite struct CorruptionTests {
  /// Flips bytes of one record's stored value directly in data.mdb (found by a 16-byte slice of the value
  /// as LMDB returns it); verify() names exactly that seq.
  @Test(arguments: [120, 3000])  // 120 bytes: inside a leaf page; 3000 bytes: an overflow page
  func byteFlipInDataFileIsFoundAtItsSeq(payloadSize: Int) async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let marker = Array("@@CORRUPT-ME-\(payloadSize)@@".utf8)
    let target: UInt64 = 37
    var slice: [UInt8] = []
    do {
      let log = try openLog(tmp.log)
      try await log.append((1..<target).map { event(payload: "ordinary \($0)") })
      // Incompressible payload, so it is stored raw and the marker appears verbatim in the file.
      #expect(
        try await log.append(
          [event(payload: "")].map {
            var e = $0; e.payload = marker + noise(payloadSize, seed: 7); return e
          }) == target...target)
      try await log.append((0..<40).map { event(payload: "later \($0)") })
      #expect(try log.verify().isOK)
      let stored = try #require(try log.shared.env.withRead { try $0.get(log.shared.env.dbs.events, seqKey(target)) })
      #expect(stored.first == 3)  // written as a version 3 record
      slice = Array(stored[(stored.count / 2)..<(stored.count / 2 + 16)])
      log.close()
    }
    let path = tmp.log + "/data.mdb"
    var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    var hits = 0
    var i = 0
    while i + slice.count <= bytes.count {
      if bytes[i] == slice[0] && Array(bytes[i..<(i + slice.count)]) == slice {
        // Flip two bytes inside the slice (copy-on-write may have left stale copies of the page; flipping
        // those too is harmless).
        bytes[i + 8] ^= 0xFF
        bytes[i + 7] ^= 0x5A
        hits += 1
        i += slice.count
      } else {
        i += 1
      }
    }
    #expect(hits >= 1)
    try Data(bytes).write(to: URL(fileURLWithPath: path))

    let log = try openLog(tmp.log)
    defer { log.close() }
    let report = try log.verify()
    #expect(report.firstBad?.seq == target, "\(String(describing: report.firstBad))")
    #expect(report.firstBad?.reason.contains("checksum") == true)
    #expect(report.records == target - 1)
    let e = expectEventLogError(.corrupt) { _ = try log.record(at: target) }
    #expect(e?.seq == target)
    #expect(try log.record(at: target - 1)?.payload == Array("ordinary \(target - 1)".utf8))
    // A v2 record's chain hash needs every record since the checkpoint before it, so the records up to the
    // next checkpoint (64) cannot be returned with their hashes; from there on reads work again.
    let after = expectEventLogError(.corrupt) { _ = try log.record(at: target + 1) }
    #expect(after?.seq == target)
    #expect(try log.record(at: 65)?.payload == Array("later 27".utf8))
    #expect(try log.records(from: 65).count == 13)
    _ = expectEventLogError(.corrupt) { _ = try log.records(from: 1) }
  }

  /// Writes raw values through LMDB (bypassing the record encoder): garbage, a truncated record, a
  /// re-encoded record with a valid checksum but different content (breaks the chain at the next seq), a gap.
  @Test func rawValueDamage() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    try await log.append((0..<30).map { event(payload: "value \($0)") })
    let dbs = log.shared.env.dbs
    func rawPut(_ seq: UInt64, _ value: [UInt8]) throws {
      try log.shared.env.withWrite { try $0.put(dbs.events, seqKey(seq), value) }
    }
    func rawValue(_ seq: UInt64) throws -> [UInt8] {
      try #require(try log.shared.env.withRead { try $0.get(dbs.events, seqKey(seq)) })
    }
    let original10 = try rawValue(10)

    // 1. Garbage (too short).
    try rawPut(10, [1, 2, 3])
    var r = try log.verify()
    #expect(r.firstBad?.seq == 10)
    #expect(r.firstBad?.reason.contains("too short") == true)

    // 2. Truncated record (length fields no longer add up; checksum catches it first).
    try rawPut(10, Array(original10.dropLast(9)))
    r = try log.verify()
    #expect(r.firstBad?.seq == 10)

    // 3. Bad length field with a recomputed checksum: bounds checks, no crash.
    var lying = original10
    #expect(lying[0] == 3 && lying[9] & ~3 == 0)  // v3, no dictionary: the body length varint is at offset 10
    lying[10] = 0xFF
    lying.removeLast(4)
    lying.appendBE(lying.withUnsafeBytes { CRC32C.checksum(key: 10, $0) })
    try rawPut(10, lying)
    r = try log.verify()
    #expect(r.firstBad?.seq == 10, "\(String(describing: r.firstBad))")

    // 4. A well-formed (v1) record with different content that links to record 9: its own checksum and
    //    link are fine; the chain recomputed through it no longer matches meta head.hash, and the reason
    //    names the range from the record after the last confirmed link.
    let prev = try #require(try log.record(at: 9)).hash
    let forged = RecordFormat.encodeV1(
      seq: 10, timestampNs: 1, event: event(payload: "forged"), dictionaryID: 0,
      storedPayload: Array("forged".utf8), raw: true, previousHash: prev)
    try rawPut(10, forged)
    r = try log.verify()
    #expect(r.firstBad?.seq == 10, "\(String(describing: r.firstBad))")
    #expect(r.firstBad?.reason.contains("head.hash") == true)
    #expect(r.firstBad?.reason.contains("10...30") == true)

    // 5. Restore, then delete a record in the middle: a gap is reported at the missing seq.
    try rawPut(10, original10)
    #expect(try log.verify().isOK)
    try log.shared.env.withWrite { txn in
      try seqKey(20).withUnsafeBytes { kb in
        var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
        try check(mdb_del(txn.ptr, dbs.events, &k, nil), "mdb_del")
      }
    }
    r = try log.verify()
    #expect(r.firstBad?.seq == 20)
    #expect(r.firstBad?.reason.contains("missing") == true)
  }

  /// Random byte damage to stored values (with and without a recomputed checksum, so the parser and the
  /// decompressor see the damage too) never crashes; an invalid checksum is always reported at that seq.
  @Test func randomDamageNeverCrashes() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log) { $0.durability = .noSync }
    defer { log.close() }
    for i in 0..<40 { try await log.append([event(payload: String(decoding: jsonPayload(i), as: UTF8.self))]) }
    try log.trainDictionary(sampleLimit: 40, dictionarySize: 2048)
    for i in 40..<50 { try await log.append([event(payload: String(decoding: jsonPayload(i), as: UTF8.self))]) }
    var raw = event()
    raw.payload = noise(300, seed: 3)
    try await log.append([raw, event(payload: "")])
    let head = log.headSeq
    let dbs = log.shared.env.dbs
    var x: UInt64 = 0x1234_5678_9ABC_DEF1
    func rnd(_ n: Int) -> Int {
      x ^= x << 13
      x ^= x >> 7
      x ^= x << 17
      return Int(x % UInt64(max(n, 1)))
    }
    for iteration in 0..<400 {
      let seq = UInt64(1 + rnd(Int(head)))
      let original = try #require(try log.shared.env.withRead { try $0.get(dbs.events, seqKey(seq)) })
      var v = original
      switch rnd(4) {
      case 0: v.removeLast(1 + rnd(v.count - 1))
      case 1: v += noise(1 + rnd(64), seed: x)
      default: for _ in 0...rnd(4) { v[rnd(v.count)] ^= UInt8(1 + rnd(255)) }
      }
      let fixCRC = iteration % 2 == 0 && v.count > 4
      if fixCRC {
        v.removeLast(4)
        v.appendBE(v.first == 1 || v.first == 0x4F ? CRC32C.checksum(v) : v.withUnsafeBytes { CRC32C.checksum(key: seq, $0) })
      }
      try log.shared.env.withWrite { try $0.put(dbs.events, seqKey(seq), v) }
      let report = try log.verify()
      if v != original {
        if !fixCRC {
          #expect(report.firstBad?.seq == seq, "iteration \(iteration)")
        } else if let bad = report.firstBad {
          // Damage that still decodes shows where the chain next meets a checkpoint or the head; the
          // reported seq is the start of that range (at most one checkpoint interval before `seq`).
          #expect(bad.seq <= seq + 1 && bad.seq + ChainCheckpoints.interval > seq, "iteration \(iteration): \(bad)")
        }
      }
      _ = try? log.record(at: seq)
      _ = try? log.records(from: 1)
      try log.shared.env.withWrite { try $0.put(dbs.events, seqKey(seq), original) }
    }
    #expect(try log.verify().isOK)
  }
}
