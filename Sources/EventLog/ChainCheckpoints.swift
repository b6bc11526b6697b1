import CLMDB

/// Chain checkpoints: the chain hash of every ``interval``-th record, kept in the `chain` database because
/// version 2 records do not store their predecessor's hash (``RecordFormat``).
///
/// Value: `hash(seq)` (32 bytes) || CRC-32C of the 8-byte key followed by the hash (u32 big-endian), so a
/// damaged checkpoint is recognised as such (readers fall back to an earlier one; `verify` names it). A log
/// written only by older builds has no `chain` database until a writer opens it.
///
/// Cost of dropping the per-record link: a record's chain hash needs every record since the checkpoint before
/// it, so a damaged record also makes the records after it, up to the next checkpoint, unreadable through
/// `record(at:)` (`.corrupt` naming the damaged seq; their bytes are intact and `verify` names the first bad
/// seq). A reader opened read-only before a writer first created `chain` sees no checkpoints and recomputes
/// from seq 1 (correct, slower) until it reopens.
enum ChainCheckpoints {
  /// A checkpoint every this many seqs: a random read recomputes at most `interval - 1` predecessors, and
  /// the checkpoints cost about 50 / 32 ≈ 1.6 bytes per event in LMDB pages.
  static let interval: UInt64 = 32
  static let name = "chain"

  static func value(seq: UInt64, hash: [UInt8]) -> [UInt8] {
    var v = hash
    v.appendBE(hash.withUnsafeBytes { CRC32C.checksum(key: seq, $0) })
    return v
  }

  /// The hash stored in a checkpoint value, or nil if the value is damaged (length or checksum).
  static func hash(_ v: UnsafeRawBufferPointer, seq: UInt64) -> [UInt8]? {
    guard v.count == 36 else { return nil }
    let h = UnsafeRawBufferPointer(rebasing: v[0..<32])
    var r = ByteReader(v, offset: 32)
    guard let crc = r.u32(), crc == CRC32C.checksum(key: seq, h) else { return nil }
    return Array(h)
  }

  /// Seq of the newest checkpoint (0 if none).
  static func lastSeq(_ txn: Transaction, _ dbs: Databases) throws -> UInt64 {
    guard let chain = dbs.chain else { return 0 }
    let c = try txn.cursor(chain)
    defer { c.close() }
    return try c.get(MDB_LAST) { k, _ in decodeBE64(k) ?? 0 } ?? 0
  }
}

extension LogShared {
  /// The newest intact checkpoint at or before `seq` (seq 0 / zero hash if none). Damaged ones are skipped
  /// with a warning (`verify` reports them).
  func nearestCheckpoint(atOrBefore seq: UInt64, txn: Transaction) throws -> (seq: UInt64, hash: [UInt8]) {
    guard let chain = env.dbs.chain, seq > 0 else { return (0, RecordFormat.zeroHash) }
    let c = try txn.cursor(chain)
    defer { c.close() }
    typealias Entry = (seq: UInt64?, hash: [UInt8]?)
    func entry(_ k: UnsafeRawBufferPointer, _ v: UnsafeRawBufferPointer) -> Entry {
      guard let s = decodeBE64(k) else { return (nil, nil) }
      return (s, ChainCheckpoints.hash(v, seq: s))
    }
    var e: Entry? = try c.get(MDB_SET_RANGE, key: seqKey(seq), entry)
    if e == nil || (e?.seq ?? .max) > seq { e = try c.get(e == nil ? MDB_LAST : MDB_PREV, entry) }
    while let cur = e {
      if let s = cur.seq, s <= seq {
        if let h = cur.hash { return (s, h) }
        logger.warning("damaged chain checkpoint skipped", metadata: ["seq": "\(s)"])
      }
      e = try c.get(MDB_PREV, entry)
    }
    return (0, RecordFormat.zeroHash)
  }

  /// The chain hash of record `seq - 1` (zeros for seq 1): from `meta` when it is the head, from the record
  /// itself when it is a v1 record, else recomputed from the nearest checkpoint. Throws `.corrupt` naming a
  /// missing or bad record on the way.
  func hashBefore(_ seq: UInt64, txn: Transaction) throws -> [UInt8] {
    guard seq > 1 else { return RecordFormat.zeroHash }
    let target = seq - 1
    let meta = try readHeadState(txn, env.dbs)
    if meta.headSeq == target { return meta.headHash }
    let v1: [UInt8]?? = try txn.withValue(env.dbs.events, seqKey(target)) { v in
      let h = try RecordFormat.parse(v, key: target)
      return h.version == 1 ? try decode(h, txn: txn, previousHash: nil).hash : nil
    }
    if let v1, let hash = v1 { return hash }
    let start = try nearestCheckpoint(atOrBefore: target, txn: txn)
    var running = start.hash
    if start.seq == target { return running }
    let c = try txn.cursor(env.dbs.events)
    defer { c.close() }
    let ctx = RecordDecoder(shared: self)
    var expected = start.seq + 1
    var op = MDB_SET_RANGE
    var key: [UInt8]? = seqKey(expected)
    while expected <= target {
      let found: UInt64? = try c.get(op, key: key) { k, v in
        guard let s = decodeBE64(k), s == expected else { return decodeBE64(k) ?? .max }
        running = try decode(RecordFormat.parse(v, key: s), txn: txn, previousHash: running, context: ctx).hash
        return s
      }
      guard found == expected else {
        throw EventLogError.corrupt(expected, "record \(expected) is missing (needed for the chain hash of \(seq))")
      }
      expected += 1
      op = MDB_NEXT
      key = nil
    }
    return running
  }
}
