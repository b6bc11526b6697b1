import Foundation

/// The marker every group commit of a `.sync` log writes into the `meta` database under ``key`` (issue 14: one
/// flush per durable commit; ``CommitRecovery``).
///
/// Why it exists: a `.sync` log commits with LMDB's `MDB_NOMETASYNC` — `mdb_txn_commit` flushes the
/// transaction's data pages (one `fdatasync`) and then writes the meta page that makes them current without
/// flushing it; the next commit's flush (or ``EventLog/close()``) carries it to disk. A system crash in between
/// leaves LMDB consistent at the commit before (LMDB docs on `MDB_NOMETASYNC`), with the last commit's pages on
/// disk but unreachable. The marker makes those pages findable and checkable: it sits under ``key`` on the
/// `meta` database's leaf page, which every commit writes afresh anyway (head seq and hash), and names the
/// commit's first and last seq, the chain hash of its last record and the consumer checkpoints the commit
/// stored beside its events (the only part of a commit that cannot be derived from its records).
///
/// Layout (big-endian): magic `OSCOMMIT` (8 bytes), format version 1 (1 byte), wall-clock time of the commit in
/// ns (8; orders two markers for the same seqs: a failed commit's and the one after it), first seq (8), last
/// seq (8), chain hash of the last record (32), number of checkpoints (4), then per checkpoint name length (2),
/// name (UTF-8) and seq (8), then each record's own CRC-32C (4 per seq, the last 4 bytes of its stored value:
/// where a failed commit's record lies beside its replacement's under one seq, it names the right one), and a
/// CRC-32C (4) of everything before it.
struct CommitMarker: Sendable, Hashable {
  /// Its key in the `meta` database.
  static let key = Array("commit.last".utf8)
  static let magic = Array("OSCOMMIT".utf8)
  static let version: UInt8 = 1

  /// When the commit was made (wall clock, ns since the Unix epoch).
  var committedAtNs: UInt64
  /// Seqs the commit stored (`firstSeq...lastSeq`).
  var firstSeq: UInt64
  var lastSeq: UInt64
  /// Chain hash of the record `lastSeq` (32 bytes).
  var lastHash: [UInt8]
  /// Consumer checkpoints (`checkpoints` database: name → seq) the commit stored.
  var checkpoints: [(name: String, seq: UInt64)]
  /// Per seq from `firstSeq`: the stored CRC-32C of that record's value (its last 4 bytes, big-endian).
  var recordCRCs: [UInt32]

  static func == (a: CommitMarker, b: CommitMarker) -> Bool {
    a.committedAtNs == b.committedAtNs && a.firstSeq == b.firstSeq && a.lastSeq == b.lastSeq && a.lastHash == b.lastHash
      && a.checkpoints.map(\.name) == b.checkpoints.map(\.name) && a.checkpoints.map(\.seq) == b.checkpoints.map(\.seq)
      && a.recordCRCs == b.recordCRCs
  }

  func hash(into h: inout Hasher) {
    h.combine(committedAtNs)
    h.combine(firstSeq)
    h.combine(lastSeq)
    h.combine(lastHash)
  }

  /// The stored value.
  var encoded: [UInt8] {
    var v = Self.magic
    v.append(Self.version)
    v.appendBE(committedAtNs)
    v.appendBE(firstSeq)
    v.appendBE(lastSeq)
    v.append(contentsOf: lastHash)
    v.appendBE(UInt32(checkpoints.count))
    for c in checkpoints {
      let name = Array(c.name.utf8)
      v.appendBE(UInt16(name.count))
      v.append(contentsOf: name)
      v.appendBE(c.seq)
    }
    for c in recordCRCs { v.appendBE(c) }
    v.appendBE(v.withUnsafeBytes { CRC32C.checksum($0) })
    return v
  }

  /// Decodes a stored value; nil unless magic, version, lengths and checksum are all right (pages found by
  /// ``CommitRecovery``'s scan may hold anything).
  init?(decoding v: UnsafeRawBufferPointer) {
    guard v.count >= Self.magic.count + 1 + 8 + 8 + 8 + 32 + 4 + 4 + 4 else { return nil }
    guard v.starts(with: Self.magic) else { return nil }
    let body = UnsafeRawBufferPointer(rebasing: v[0..<(v.count - 4)])
    var tail = ByteReader(v, offset: v.count - 4)
    guard let crc = tail.u32(), crc == CRC32C.checksum(body) else { return nil }
    var r = ByteReader(body, offset: Self.magic.count)
    guard r.u8() == Self.version, let at = r.u64(), let first = r.u64(), let last = r.u64(), first >= 1, last >= first,
      let hash = r.bytes(32), let n = r.u32(), Int(n) <= r.remaining / 10
    else { return nil }
    var cps: [(String, UInt64)] = []
    for _ in 0..<n {
      guard let len = r.u16(), let name = r.string(Int(len)), let seq = r.u64() else { return nil }
      cps.append((name, seq))
    }
    guard last - first < UInt64(r.remaining / 4), r.remaining == Int(last - first + 1) * 4 else { return nil }
    var crcs: [UInt32] = []
    crcs.reserveCapacity(r.remaining / 4)
    while let c = r.u32() { crcs.append(c) }
    self.init(committedAtNs: at, firstSeq: first, lastSeq: last, lastHash: Array(hash), checkpoints: cps, recordCRCs: crcs)
  }

  init(
    committedAtNs: UInt64, firstSeq: UInt64, lastSeq: UInt64, lastHash: [UInt8], checkpoints: [(name: String, seq: UInt64)],
    recordCRCs: [UInt32]
  ) {
    self.recordCRCs = recordCRCs
    self.committedAtNs = committedAtNs
    self.firstSeq = firstSeq
    self.lastSeq = lastSeq
    self.lastHash = lastHash
    self.checkpoints = checkpoints
  }
}
