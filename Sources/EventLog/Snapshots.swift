import CLMDB

#if canImport(Glibc)
  import Glibc
#endif

/// Snapshot value layout in the `snapshots` database (integers big-endian):
/// ```
/// offset size field
///      0    4 magic "OSSN"
///      4    1 format version (1 or 2)
///      5    1 flags: bit 0 = stored raw (not compressed)
///      6    8 U = uncompressed length in bytes (u64)
///     14    4 CRC-32C of every byte that follows
///  v2: 18  32 chain hash of the record at the snapshot's seq (binds the snapshot to the log it covers)
///     18/50 . stored bytes (one zstd frame, no dictionary, or raw)
/// ```
/// Version 2 is written whenever the record at the snapshot's seq exists; version 1 (no hash) otherwise and
/// by older builds. Key: snapshot name (UTF-8, no NUL) || 0x00 || seq (u64 big-endian), so a name's snapshots
/// sort by seq.
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
  ///
  /// A snapshot is an optimisation, so on a nearly full disk it is skipped before anything is written: when the
  /// file system holding the log has less free space than twice the stored size plus 1 MiB (new B-tree pages
  /// are written copy-on-write before the old ones are freed), `.diskFull` is thrown and the file does not
  /// grow (issue 17: a failed snapshot grew data.mdb into the space an operator had just freed).
  ///
  /// Bounded: only the newest `keep` snapshots of `name` (this one included) stay; older ones are deleted in
  /// the same transaction (issue 16: snapshots were never deleted). Keeping a few lets opening fall back to
  /// an older one when the newest is damaged. `keep` ≥ 1.
  public func saveSnapshot(name: String, seq: UInt64, bytes: [UInt8], keep: Int = EventLog.snapshotsKept) throws {
    try validateName(name, what: "snapshot name")
    guard bytes.count <= Int(UInt32.max) else { throw EventLogError.invalid("snapshot exceeds 4 GiB") }
    guard keep >= 1 else { throw EventLogError.invalid("keep must be at least 1") }
    let chainHash = seq == 0 ? nil : try record(at: seq)?.hash
    // Snapshots are written by one writer per name (the projection's owner), so this list is current.
    let older = try snapshotSeqs(name: name).filter { $0 != seq }.sorted(by: >).dropFirst(keep - 1)
    try performWrite { [shared] txn, compressor in
      let (stored, raw) = try compressor.compress(bytes, dict: nil)
      let needed = UInt64(stored.count) * 2 + (1 << 20)
      if let free = freeBytes(shared.directory), free < needed {
        throw EventLogError(
          code: .diskFull,
          message: "not enough free space for a snapshot at seq \(seq): it needs about \(needed) bytes, \(free) are free; skipped (the log is unchanged)")
      }
      var v = SnapshotFormat.magic
      v.append(chainHash == nil ? 1 : 2)
      v.append(raw ? 1 : 0)
      v.appendBE(UInt64(bytes.count))
      let body = (chainHash ?? []) + stored
      v.appendBE(CRC32C.checksum(body))
      v += body
      try txn.put(shared.env.dbs.snapshots, SnapshotFormat.key(name, seq), v)
      for old in older { try txn.delete(shared.env.dbs.snapshots, SnapshotFormat.key(name, old)) }
      try txn.put(shared.env.dbs.checkpoints, Array(name.utf8), seqKey(seq))
    }
  }

  /// How many snapshots of a name ``saveSnapshot(name:seq:bytes:keep:)`` keeps by default: 3.
  public static let snapshotsKept = 3

  /// The newest snapshot (highest seq) saved under `name`, decompressed, or nil. Throws `.corrupt` if its
  /// bytes fail the checksum or decompression.
  public func latestSnapshot(name: String) throws -> (seq: UInt64, bytes: [UInt8])? {
    guard let seq = try snapshotSeqs(name: name).first, let s = try snapshot(name: name, seq: seq) else { return nil }
    return (s.seq, s.bytes)
  }

  /// The seqs of every snapshot saved under `name`, newest first (keys only; nothing is decoded).
  public func snapshotSeqs(name: String) throws -> [UInt64] {
    try checkOpen()
    try validateName(name, what: "snapshot name")
    let prefix = Array(name.utf8) + [0]
    return try shared.env.withRead { txn -> [UInt64] in
      let c = try txn.cursor(shared.env.dbs.snapshots)
      defer { c.close() }
      var out: [UInt64] = []
      var op = MDB_SET_RANGE
      var key: [UInt8]? = prefix
      while true {
        let more: Bool? = try c.get(op, key: key) { k, _ in
          guard k.count == prefix.count + 8, Array(k[0..<prefix.count]) == prefix,
            let seq = decodeBE64(UnsafeRawBufferPointer(rebasing: k[prefix.count...]))
          else { return false }
          out.append(seq)
          return true
        }
        guard more == true else { break }
        op = MDB_NEXT
        key = nil
      }
      return out.reversed()
    }
  }

  /// The snapshot saved under `name` at `seq`, decompressed, or nil. Throws `.corrupt` (with `seq`) if its
  /// bytes fail the header, checksum or decompression.
  public func snapshot(name: String, seq: UInt64) throws -> SavedSnapshot? {
    try checkOpen()
    try validateName(name, what: "snapshot name")
    return try shared.env.withRead { txn in
      try txn.withValue(shared.env.dbs.snapshots, SnapshotFormat.key(name, seq)) { v in
        try decodeSnapshot(v, name: name, seq: seq)
      }
    }
  }

  private func decodeSnapshot(_ v: UnsafeRawBufferPointer, name: String, seq: UInt64) throws -> SavedSnapshot {
    try SnapshotFormat.decode(v, name: name, seq: seq, pool: shared.decompressors)
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

/// One stored snapshot, decompressed.
public struct SavedSnapshot: Sendable, Hashable {
  /// The seq of the last record the snapshot covers.
  public var seq: UInt64
  /// The opaque projection state.
  public var bytes: [UInt8]
  /// Chain hash of the record at `seq` when the snapshot was taken (nil for version-1 snapshots).
  public var chainHash: [UInt8]?
}

/// Bytes available to this process on the file system holding `path` (`statvfs(3)`: `f_bavail × f_frsize`),
/// or nil when it cannot be read.
func freeBytes(_ path: String) -> UInt64? {
  var st = statvfs()
  guard statvfs(path, &st) == 0 else { return nil }
  return UInt64(st.f_bavail) * UInt64(st.f_frsize)
}

extension SnapshotFormat {
  /// Checks (header, checksum) and decompresses a stored snapshot value of `name` at `seq`. Throws `.corrupt`
  /// with `seq`.
  static func decode(_ v: UnsafeRawBufferPointer, name: String, seq: UInt64, pool: DecompressorPool) throws -> SavedSnapshot {
    func bad(_ why: String) -> EventLogError { .corrupt(seq, "snapshot \(name)@\(seq): \(why)") }
    var r = ByteReader(v)
    guard let m = r.bytes(4), Array(m) == magic, let version = r.u8(), version == 1 || version == 2,
      let flags = r.u8(), let ulen = r.u64(), let crc = r.u32()
    else { throw bad("bad header") }
    let body = UnsafeRawBufferPointer(rebasing: v[headerSize...])
    guard CRC32C.checksum(body) == crc else { throw bad("checksum mismatch") }
    var chainHash: [UInt8]?
    var stored = body
    if version == 2 {
      guard body.count >= 32 else { throw bad("too short for its chain hash") }
      chainHash = Array(body[0..<32])
      stored = UnsafeRawBufferPointer(rebasing: body[32...])
    }
    guard ulen <= UInt64(UInt32.max) else { throw bad("length \(ulen) out of range") }
    if flags & 1 != 0 {
      guard UInt64(stored.count) == ulen else { throw bad("raw length mismatch") }
      return SavedSnapshot(seq: seq, bytes: Array(stored), chainHash: chainHash)
    }
    switch pool.decompress(stored, length: Int(ulen), dict: nil) {
    case .success(let b): return SavedSnapshot(seq: seq, bytes: b, chainHash: chainHash)
    case .failure(let f): throw bad(f.description)
    }
  }
}
