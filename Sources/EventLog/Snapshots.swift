import CLMDB

/// Snapshot value layout in the `snapshots` database (integers big-endian):
/// ```
/// offset size field
///      0    4 magic "OSSN"
///      4    1 format version (1)
///      5    1 flags: bit 0 = stored raw (not compressed)
///      6    8 U = uncompressed length in bytes (u64)
///     14    4 CRC-32C of the stored bytes that follow
///     18    . stored bytes (one zstd frame, no dictionary, or raw)
/// ```
/// Key: snapshot name (UTF-8, no NUL) || 0x00 || seq (u64 big-endian), so a name's snapshots sort by seq.
enum SnapshotFormat {
  static let magic: [UInt8] = [0x4F, 0x53, 0x53, 0x4E]
  static let headerSize = 18

  static func key(_ name: String, _ seq: UInt64) -> [UInt8] {
    var k = Array(name.utf8)
    k.append(0)
    k.appendBE(seq)
    return k
  }
}

extension EventLog {
  /// Stores a snapshot (opaque projection state, `bytes` uncompressed) taken at `seq`, compressed with zstd,
  /// and sets checkpoint `name` = `seq` in the same write transaction. `name`: 1–500 bytes, no NUL.
  /// Blocks until committed. Throws `.invalidArgument`, `.diskFull`, `.readOnly`, `.closed`.
  public func saveSnapshot(name: String, seq: UInt64, bytes: [UInt8]) throws {
    try validateName(name, what: "snapshot name")
    guard bytes.count <= Int(UInt32.max) else { throw EventLogError.invalid("snapshot exceeds 4 GiB") }
    try performWrite { [shared] txn, compressor in
      let (stored, raw) = try compressor.compress(bytes, dict: nil)
      var v = SnapshotFormat.magic
      v.append(1)
      v.append(raw ? 1 : 0)
      v.appendBE(UInt64(bytes.count))
      v.appendBE(CRC32C.checksum(stored))
      v += stored
      try txn.put(shared.env.dbs.snapshots, SnapshotFormat.key(name, seq), v)
      try txn.put(shared.env.dbs.checkpoints, Array(name.utf8), seqKey(seq))
    }
  }

  /// The newest snapshot (highest seq) saved under `name`, decompressed, or nil. Throws `.corrupt` if its
  /// bytes fail the checksum or decompression.
  public func latestSnapshot(name: String) throws -> (seq: UInt64, bytes: [UInt8])? {
    try checkOpen()
    try validateName(name, what: "snapshot name")
    let prefix = Array(name.utf8) + [0]
    // Position after the last key with this prefix: name || 0x01 sorts right after name || 0x00 || *.
    let after = Array(name.utf8) + [1]
    return try shared.env.withRead { txn -> (seq: UInt64, bytes: [UInt8])? in
      let c = try txn.cursor(shared.env.dbs.snapshots)
      defer { c.close() }
      let found = try c.get(MDB_SET_RANGE, key: after) { _, _ in true } ?? false
      let parse: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> (seq: UInt64, bytes: [UInt8])? = {
        k, v in
        guard k.count == prefix.count + 8, Array(k[0..<prefix.count]) == prefix else { return nil }
        guard let seq = decodeBE64(UnsafeRawBufferPointer(rebasing: k[prefix.count...])) else { return nil }
        return (seq, try self.decodeSnapshot(v, name: name, seq: seq))
      }
      let r = try c.get(found ? MDB_PREV : MDB_LAST, parse)
      return r ?? nil
    }
  }

  private func decodeSnapshot(_ v: UnsafeRawBufferPointer, name: String, seq: UInt64) throws -> [UInt8] {
    func bad(_ why: String) -> EventLogError { .corrupt(seq, "snapshot \(name)@\(seq): \(why)") }
    var r = ByteReader(v)
    guard let m = r.bytes(4), Array(m) == SnapshotFormat.magic, r.u8() == 1, let flags = r.u8(),
      let ulen = r.u64(), let crc = r.u32()
    else { throw bad("bad header") }
    let stored = UnsafeRawBufferPointer(rebasing: v[SnapshotFormat.headerSize...])
    guard CRC32C.checksum(stored) == crc else { throw bad("checksum mismatch") }
    guard ulen <= UInt64(UInt32.max) else { throw bad("length \(ulen) out of range") }
    if flags & 1 != 0 {
      guard UInt64(stored.count) == ulen else { throw bad("raw length mismatch") }
      return Array(stored)
    }
    switch shared.decompressors.decompress(stored, length: Int(ulen), dict: nil) {
    case .success(let b): return b
    case .failure(let f): throw bad(f.description)
    }
  }

  /// The checkpoint (last handled seq) stored under `name`, or nil.
  public func checkpoint(_ name: String) throws -> UInt64? {
    try checkOpen()
    try validateName(name, what: "checkpoint name")
    return try shared.env.withRead { txn in
      guard let v = try txn.get(shared.env.dbs.checkpoints, Array(name.utf8)) else { return nil }
      guard let n = decodeBE64(v) else { throw EventLogError.corrupt(nil, "checkpoint \(name) is not 8 bytes") }
      return n
    }
  }

  /// Sets checkpoint `name` = `seq` in its own write transaction (blocks until committed). To record a
  /// checkpoint atomically with events use `append(_:expecting:checkpoint:)`.
  public func setCheckpoint(_ name: String, seq: UInt64) throws {
    try validateName(name, what: "checkpoint name")
    try performWrite { [shared] txn, _ in
      try txn.put(shared.env.dbs.checkpoints, Array(name.utf8), seqKey(seq))
    }
  }
}
