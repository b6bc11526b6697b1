import CLMDB
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// What the writable open of a `.sync` log did about a last commit whose meta page may not have reached the
/// disk (``CommitMarker``; issue 14: one flush per durable commit).
public struct CommitRecoveryReport: Sendable, Hashable {
  /// The previous writer closed the log (``EventLog/close()`` flushed the meta page and left
  /// ``CommitRecovery/cleanCloseFile``): nothing to look for, no page was read.
  public var cleanClose: Bool
  /// Pages of `data.mdb` the scan read (0 after a clean close).
  public var pagesScanned: Int
  /// Seqs put back from commits whose data pages were on disk but whose meta page was not (nil: none).
  public var recovered: ClosedRange<UInt64>?
  /// Markers of commits after the head that did not check out (a commit torn by the crash, which therefore
  /// had not returned to its callers): left out, the log ends before them.
  public var rejected: Int
}

/// Puts back, at the writable open of a `.sync` log, the commits a system crash cut off (issue 14).
///
/// A `.sync` commit flushes its data pages once (`MDB_NOMETASYNC`) and returns; its meta page reaches the disk
/// with the next flush. After a crash before that, LMDB opens consistent at the commit before, and the lost
/// commit's pages — flushed before `append` returned — are still in the file, unreachable: LMDB only reuses
/// pages freed two commits earlier, so neither the commit before nor a later one overwrote them. The open
/// therefore reads every page of `data.mdb` (only when the previous writer did not close the log: a clean close
/// flushes the meta page and leaves ``cleanCloseFile``), finds the ``CommitMarker`` that starts right after the
/// head, collects the records it names from leaf pages (each checked as on every read: checksum, decompression,
/// chain hash from the head's), and writes them back in one transaction — only if every record is found and the
/// last one's chain hash is the marker's, so a commit torn by the crash (which had not returned) is never
/// half-restored. This repeats while a marker follows the new head. Aggregate versions, chain checkpoints and
/// the head are derived from the records; consumer checkpoints come from the marker.
enum CommitRecovery {
  /// Created by ``EventLog/close()`` after the meta page is flushed; removed (and the removal made durable) by
  /// the next writable open before anything is written.
  static let cleanCloseFile = "closed-cleanly"

  /// Runs at a writable open (before the writer starts); returns the head after recovery and the report.
  static func run(shared: LogShared, head: PublishedState) throws -> (PublishedState, CommitRecoveryReport) {
    let dir = shared.directory
    let flag = dir + "/" + cleanCloseFile
    if access(flag, F_OK) == 0 {
      guard unlink(flag) == 0 else { throw EventLogError.posix("remove \(flag)") }
      try fsyncDirectory(dir)
      return (head, CommitRecoveryReport(cleanClose: true, pagesScanned: 0, recovered: nil, rejected: 0))
    }
    let scan = try CommitRecoveryScan.scan(path: dir + "/data.mdb", after: head.headSeq)
    var h = head
    var recovered: ClosedRange<UInt64>?
    while true {
      let next = scan.markers.filter { $0.firstSeq == h.headSeq + 1 }.sorted { $0.lastSeq > $1.lastSeq }
      guard let (marker, records) = try next.lazy.compactMap({ m in try verify(m, scan: scan, head: h, shared: shared).map { (m, $0) } }).first
      else { break }
      try apply(marker, records, shared: shared)
      h = try shared.env.withRead { try readHeadState($0, shared.env.dbs) }
      recovered = (recovered?.lowerBound ?? marker.firstSeq)...marker.lastSeq
    }
    let rejected = Set(scan.markers.filter { $0.lastSeq > h.headSeq }).count
    if let recovered {
      try check(mdb_env_sync(shared.env.env, 1), "mdb_env_sync")
      shared.logger.warning(
        "event log: put back commits that a system crash cut off (their meta page had not reached the disk)",
        metadata: ["seqs": "\(recovered.lowerBound)...\(recovered.upperBound)", "directory": "\(dir)"])
    }
    if rejected > 0 {
      shared.logger.warning(
        "event log: found commits after the head that do not check out (torn by a crash before they returned); the log ends at the head",
        metadata: ["head": "\(h.headSeq)", "commits": "\(rejected)", "directory": "\(dir)"])
    }
    return (h, CommitRecoveryReport(cleanClose: false, pagesScanned: scan.pages, recovered: recovered, rejected: rejected))
  }

  /// One record found for a marker: its seq, stored value and decoded form (hash, aggregate).
  typealias Found = (seq: UInt64, value: [UInt8], record: EventRecord)

  /// The records `marker` names, each checked and chained from `head`; nil unless every seq has exactly one
  /// sound value (or several identical ones) and the last chain hash is the marker's.
  static func verify(_ marker: CommitMarker, scan: CommitRecoveryScan.Result, head: PublishedState, shared: LogShared) throws -> [Found]? {
    guard marker.lastSeq - marker.firstSeq < 1 << 24 else { return nil }
    return try shared.env.withRead { txn -> [Found]? in
      let ctx = RecordDecoder(shared: shared)
      var prev = head.headHash
      var out: [Found] = []
      for seq in marker.firstSeq...marker.lastSeq {
        var match: Found?
        for value in scan.candidates[seq] ?? [] {
          let record = try? value.withUnsafeBytes { b -> EventRecord in
            try shared.decode(RecordFormat.parse(b, key: seq), txn: txn, previousHash: prev, context: ctx)
          }
          guard let record else { continue }
          if let m = match, m.record.hash != record.hash { return nil }  // two different successors: give up
          match = (seq, value, record)
        }
        guard let m = match else { return nil }
        out.append(m)
        prev = m.record.hash
      }
      return prev == marker.lastHash ? out : nil
    }
  }

  /// Writes the records of one recovered commit back as the writer would have: records, chain checkpoints,
  /// aggregate versions, consumer checkpoints, head, format marker and the commit marker.
  static func apply(_ marker: CommitMarker, _ records: [Found], shared: LogShared) throws {
    let dbs = shared.env.dbs
    try shared.env.withWrite { txn in
      var versions = AggregateVersions()
      for f in records {
        try txn.put(dbs.events, seqKey(f.seq), f.value, flags: MDB_APPEND)
        if f.seq % ChainCheckpoints.interval == 0, let chain = dbs.chain {
          try txn.put(chain, seqKey(f.seq), ChainCheckpoints.value(seq: f.seq, hash: f.record.hash))
        }
        try versions.bump(f.record.aggregate) { try readAggregateVersion(txn, dbs, f.record.aggregate) }
      }
      for (agg, v) in versions.touched { try txn.put(dbs.aggregates, aggregateKey(agg), seqKey(v)) }
      for c in marker.checkpoints { try txn.put(dbs.checkpoints, Array(c.name.utf8), seqKey(c.seq)) }
      try txn.put(dbs.meta, MetaKey.headSeq, seqKey(marker.lastSeq))
      try txn.put(dbs.meta, MetaKey.headHash, marker.lastHash)
      let marked = try txn.get(dbs.meta, MetaKey.format).flatMap { decodeBE32($0) } ?? 0
      if marked < UInt32(RecordFormat.formatVersion), records.contains(where: { $0.value.first == RecordFormat.formatVersion }) {
        var v = [UInt8]()
        v.appendBE(UInt32(RecordFormat.formatVersion))
        try txn.put(dbs.meta, MetaKey.format, v)
      }
      try txn.put(dbs.meta, CommitMarker.key, marker.encoded)
    }
  }
}
