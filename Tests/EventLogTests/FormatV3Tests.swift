import CLMDB
import Foundation
import Testing

@testable import EventLog

/// Record format version 3 (issue 14): single-block bodies without zstd frame metadata, logs holding v1, v2
/// and v3 records, and damaged v3 records named by verify.
@Suite struct FormatV3Tests {
  /// Text that compresses but not to an RLE block: `n` bytes of numbered JSON-ish lines.
  static func text(_ n: Int, seed: Int) -> [UInt8] {
    var out = [UInt8]()
    var i = seed
    while out.count < n {
      out += Array("{\"line\":\(i),\"value\":\"v-\(i * 7919 % 1000)\"}\n".utf8)
      i += 1
    }
    return Array(out.prefix(n))
  }

  /// Bodies of every frame-content-size form compress to a single block exactly when they fit one (the
  /// rebuilt prefix is byte-for-byte zstd's own), and decode back, with and without a dictionary.
  @Test func singleBlockRoundTrip() throws {
    let samples = (0..<64).map { Self.text(300 + $0 * 7, seed: $0 * 13) }
    let dict = try ZstdDictionary(id: 1, bytes: try trainZstdDictionary(samples: samples, capacity: 4096), level: 4)
    let pool = DecompressorPool()
    let decoder = BodyDecoder(pool: pool)
    defer { decoder.close() }
    for d in [nil, dict] {
      let compressor = try Compressor(level: 3)
      // Too short to gain anything: stored raw.
      if d == nil { #expect(try Self.text(40, seed: 3).withUnsafeBytes { try compressor.compressBody($0, dict: d) } == nil) }
      for size in [200, 255, 256, 300, 4_000, 65_791, 65_792, 100_000, 131_072, 131_073, 300_000] {
        let src = Self.text(size, seed: size)
        let (stored, block) = try #require(
          try src.withUnsafeBytes { s in try compressor.compressBody(s, dict: d).map { (Array($0.stored), $0.block) } },
          "size \(size)")
        #expect(block == (size <= ZstdSingleBlock.maxContentSize), "size \(size)")
        if block {
          let frame = try #require(try src.withUnsafeBytes { try compressor.compressFrame($0, dict: d).map(Array.init) })
          let prefix = size < 256 ? 5 : size < 65_792 ? 6 : 8
          #expect(frame.count == stored.count + prefix, "size \(size): block keeps all but the prefix")
          #expect(Array(frame.suffix(stored.count)) == stored)
        }
        let back = stored.withUnsafeBytes { decoder.decompressBody($0, length: size, dict: d, block: block) }
        switch back {
        case .success(let b): #expect(Array(b) == src, "size \(size)")
        case .failure(let e): Issue.record("size \(size): \(e)")
        }
      }
    }
    // A block never claims more than one block can hold, and a wrong length is refused, not trusted.
    let src = Self.text(1000, seed: 1)
    let compressor = try Compressor(level: 3)
    let stored = try #require(try src.withUnsafeBytes { try compressor.compressBody($0, dict: nil).map { Array($0.stored) } })
    for wrong in [999, 1001, 0, ZstdSingleBlock.maxContentSize + 1] {
      if case .success = stored.withUnsafeBytes({ decoder.decompressBody($0, length: wrong, dict: nil, block: true) }) {
        Issue.record("length \(wrong) accepted for a 1000-byte body")
      }
    }
  }

  /// The value of `seq` re-encoded as `version` (1 or 2) with the same content: the chain is unchanged.
  static func reencode(_ r: EventRecord, as version: Int, log: EventLog) throws -> [UInt8] {
    let e = NewEvent(
      type: r.type, aggregate: r.aggregate, actor: r.actor, requestID: r.requestID, payloadVersion: r.payloadVersion,
      payload: r.payload, timestampNs: r.timestampNs)
    let dict = r.dictionaryID == 0 ? nil : try log.shared.dictionary(r.dictionaryID)
    let compressor = try Compressor(level: 3)
    if version == 1 {
      let c = try compressor.compress(e.payload, dict: dict)
      return RecordFormat.encodeV1(
        seq: r.seq, timestampNs: r.timestampNs, event: e, dictionaryID: c.raw ? 0 : r.dictionaryID,
        storedPayload: c.bytes, raw: c.raw, previousHash: r.previousHash)
    }
    let body = RecordFormat.body(of: e)
    let frame = try body.withUnsafeBytes { try compressor.compressFrame($0, dict: dict).map(Array.init) }
    return RecordFormat.encodeV2(
      seq: r.seq, timestampNs: r.timestampNs, dictionaryID: frame == nil ? 0 : r.dictionaryID,
      stored: frame ?? body, raw: frame == nil, bodyLength: body.count)
  }

  /// A log as an older build left it — v1 records, then v2 records (some with a dictionary), format 2 — is
  /// read and verified as it is, then appended to in v3 (single blocks, raw and whole-frame bodies, with and
  /// without a dictionary): one chain across all three, every read path agrees, nothing old is rewritten.
  @Test func mixedV1V2V3LogReadsVerifiesAndReplays() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    var events = FormatV2Tests.variedEvents(140)
    // A short body of noise: stored raw even with the dictionary.
    events[105] = event("x", kind: "k", id: "", actor: "", request: "", payload: "", ts: 1_700_000_000_000_000_105)
    events[105].payload = noise(64, seed: 0x9E37_79B9_7F4A_7C15)
    var old: [[UInt8]] = []
    do {
      let log = try openLog(tmp.log)
      try await log.append(Array(events[0..<30]))
      try log.trainDictionary(sampleLimit: 30, dictionarySize: 4096)
      for e in events[30..<70] { try await log.append([e]) }
      let records = try log.records(from: 1)
      #expect(records.contains { $0.dictionaryID == 1 && $0.seq > 40 })
      old = try records.map { r in try Self.reencode(r, as: r.seq <= 25 ? 1 : 2, log: log) }
      let env = log.shared.env
      let dbs = env.dbs
      let values = old
      try env.withWrite { txn in
        for (i, v) in values.enumerated() { try txn.put(dbs.events, seqKey(UInt64(i + 1)), v) }
        try txn.put(dbs.meta, MetaKey.format, [0, 0, 0, 2])
      }
      log.close()
    }
    do {
      let ro = try openLog(tmp.log) { $0.readOnly = true }
      let all = try ro.records(from: 1)
      #expect(all.count == 70)
      for (r, e) in zip(all, events) { FormatV2Tests.same(r, e) }
      #expect(try ro.verify().isOK)
      ro.close()
    }
    let log = try openLog(tmp.log)
    try await log.append(Array(events[70..<100]))
    for e in events[100...] { try await log.append([e]) }
    let dbs = log.shared.env.dbs
    #expect(try log.shared.env.withRead { try $0.get(dbs.meta, MetaKey.format) } == [0, 0, 0, 3])
    var storages: Set<UInt64> = []
    for seq in 1...UInt64(events.count) {
      let v = try #require(try FormatV2Tests.stored(log, seq))
      if seq <= 70 {
        #expect(v == old[Int(seq) - 1], "seq \(seq) untouched")
      } else {
        #expect(v.first == 3, "seq \(seq)")
        let field = v.withUnsafeBytes { p -> UInt64? in
          var r = ByteReader(p, offset: 9)
          return r.varint()
        }
        storages.insert(try #require(field) & 3)
      }
    }
    #expect(Set([0x4F, 2]) == Set(old.map { $0[0] }))
    #expect(storages == [0, 1, 2], "v3 single blocks, raw bodies and whole frames all written: \(storages)")
    log.close()

    let ro = try openLog(tmp.log) { $0.readOnly = true }
    defer { ro.close() }
    let all = try ro.records(from: 1)
    #expect(all.count == events.count)
    for (r, e) in zip(all, events) { FormatV2Tests.same(r, e) }
    #expect(all.filter { $0.seq > 70 && $0.dictionaryID == 1 }.count > 30)
    for (a, b) in zip(all, all.dropFirst()) { #expect(b.previousHash == a.hash, "link \(a.seq) → \(b.seq)") }
    #expect(all.last?.hash == ro.headHash)
    for seq: UInt64 in [1, 25, 26, 70, 71, 72, 96, 97, 128, 140] { #expect(try ro.record(at: seq) == all[Int(seq) - 1]) }
    var reader = ro.read(from: 20, chunkSize: 9)
    var n = 20
    while let r = try reader.next() {
      #expect(r == all[n - 1])
      n += 1
    }
    #expect(n == events.count + 1)
    try BorrowedReadingTests.expectSameAsOwned(ro, all, limit: 9)
    let report = try ro.verify()
    #expect(report.isOK, "\(String(describing: report.firstBad))")
    #expect(report.records == UInt64(events.count))
  }

  /// A damaged v3 record is named by verify: a flipped byte (checksum), and with a valid checksum an unknown
  /// storage, an oversized block length, a block that does not decode; other content that decodes is found
  /// where the chain meets the next checkpoint.
  /// A log whose format marker is above what this build reads was written by a newer build: it is refused as
  /// such (invalid argument, "not damaged"), never as a damaged log to restore from a backup, and left unchanged.
  @Test func newerLogFormatIsNotCalledDamaged() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    do {
      let log = try openLog(tmp.log)
      try await log.append([event("sandbox.updated", kind: "sandbox", id: "sb-1", payload: "{}", ts: 1_700_000_000_000_000_000)])
      let dbs = log.shared.env.dbs
      try log.shared.env.withWrite { try $0.put(dbs.meta, MetaKey.format, [0, 0, 0, 9]) }
      log.close()
    }
    let before = try Data(contentsOf: URL(fileURLWithPath: tmp.log + "/data.mdb"))
    for readOnly in [false, true] {
      do {
        _ = try openLog(tmp.log) { $0.readOnly = readOnly }
        Issue.record("a format 9 log was opened")
      } catch let e as EventLogError {
        #expect(e.code == .invalidArgument, "\(e)")
        #expect(e.message.contains("log format 9 was written by a newer openshell") && e.message.contains("not damaged"), "\(e)")
      }
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: tmp.log + "/data.mdb")) == before)
  }

  @Test func damagedV3RecordIsNamed() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    let events = (0..<100).map { i -> NewEvent in
      var e = event("sandbox.updated", kind: "sandbox", id: "sb-\(i % 9)", payload: "", ts: 1_700_000_000_000_000_000 + UInt64(i))
      e.payload = jsonPayload(i)
      return e
    }
    try await log.append(events)
    let env = log.shared.env
    let eventsDB = env.dbs.events
    let seq: UInt64 = 45
    let original = try #require(try FormatV2Tests.stored(log, seq))
    #expect(original.first == 3 && original[9] & 3 == 0, "seq 45 is a v3 single block")
    func put(_ v: [UInt8]) throws { try env.withWrite { try $0.put(eventsDB, seqKey(seq), v) } }
    func resealed(_ v: [UInt8]) -> [UInt8] {
      var u = Array(v.dropLast(4))
      u.appendBE(u.withUnsafeBytes { CRC32C.checksum(key: seq, $0) })
      return u
    }

    var flipped = original
    flipped[flipped.count - 8] ^= 0x10
    try put(flipped)
    var r = try log.verify()
    #expect(r.firstBad?.seq == seq && r.firstBad?.reason.contains("checksum mismatch") == true, "\(String(describing: r.firstBad))")
    _ = expectEventLogError(.corrupt) { _ = try log.record(at: seq) }

    var storage3 = original
    storage3[9] |= 3
    try put(resealed(storage3))
    r = try log.verify()
    #expect(r.firstBad?.seq == seq && r.firstBad?.reason.contains("unknown body storage") == true, "\(String(describing: r.firstBad))")

    let body = original.withUnsafeBytes { v -> [UInt8] in
      var br = ByteReader(v, offset: 9)
      _ = br.varint()
      _ = br.varint()
      return Array(v[br.offset..<(v.count - 4)])
    }
    var huge: [UInt8] = [3] + original[1..<9]
    huge.appendVarint(0)
    huge.appendVarint(UInt64(ZstdSingleBlock.maxContentSize + 1))
    huge += body + [0, 0, 0, 0]
    try put(resealed(huge))
    r = try log.verify()
    #expect(r.firstBad?.seq == seq && r.firstBad?.reason.contains("exceeds limit") == true, "\(String(describing: r.firstBad))")

    let garbage = RecordFormat.encodeV3(
      seq: seq, timestampNs: 1, dictionaryID: 0, storage: .block, stored: noise(body.count, seed: 5), bodyLength: 400)
    try put(garbage)
    r = try log.verify()
    #expect(r.firstBad?.seq == seq, "\(String(describing: r.firstBad))")

    var forgedEvent = events[Int(seq) - 1]
    forgedEvent.payload = jsonPayload(12_345)
    let forgedBody = RecordFormat.body(of: forgedEvent)
    let compressor = try Compressor(level: 3)
    let c = try #require(try forgedBody.withUnsafeBytes { try compressor.compressBody($0, dict: nil).map { (Array($0.stored), $0.block) } })
    try put(
      RecordFormat.encodeV3(
        seq: seq, timestampNs: forgedEvent.timestampNs!, dictionaryID: 0, storage: c.1 ? .block : .frame, stored: c.0,
        bodyLength: forgedBody.count))
    #expect(try log.record(at: seq)?.payload == jsonPayload(12_345))
    r = try log.verify()
    #expect(r.firstBad?.seq == 33 && r.firstBad?.reason.contains("33...64") == true, "\(String(describing: r.firstBad))")

    try put(original)
    #expect(try log.verify().isOK)
  }
}
