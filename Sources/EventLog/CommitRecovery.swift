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
  /// Wall-clock nanoseconds of the scan and of writing back what it found.
  public var nanoseconds: UInt64
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
/// commit's pages — flushed before `append` returned — are still in the file, unreachable: before the crash
/// LMDB reused only pages freed two commits earlier, so neither the commit before nor a later one overwrote
/// them; after it, the first write transaction may reuse exactly those pages, which is why this runs before
/// anything writes (recovery's own transaction included: the scan has read everything first). The open
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
  /// Markers of commits that failed (``recordAborted(_:directory:)``), in slots of 8-byte first seq and 32-byte
  /// last chain hash. Their pages may be on disk, but their callers were told nothing was stored.
  static let abortedFile = "aborted-commits"

  /// Runs at every writable open (whatever its durability: a `.sync` writer may have left the marker), before
  /// the writer starts; `pagesInUse` (from the open's walk of the file) are skipped. Returns the head after
  /// recovery and the report.
  static func run(shared: LogShared, head: PublishedState, pagesInUse: [Bool]?) throws -> (PublishedState, CommitRecoveryReport) {
    let dir = shared.directory
    try ensureAbortedFile(directory: dir)
    let flag = dir + "/" + cleanCloseFile
    if access(flag, F_OK) == 0 {
      guard unlink(flag) == 0 else { throw EventLogError.posix("remove \(flag)") }
      try fsyncDirectory(dir)
      try pruneAborted(directory: dir, head: head.headSeq)
      return (head, CommitRecoveryReport(cleanClose: true, pagesScanned: 0, nanoseconds: 0, recovered: nil, rejected: 0))
    }
    let started = monotonicNs()
    let scan = try CommitRecoveryScan.scan(path: dir + "/data.mdb", after: head.headSeq, skipping: pagesInUse)
    let aborted = Set(loadAborted(directory: dir))
    var h = head
    var recovered: ClosedRange<UInt64>?
    while true {
      // The newest marker first: a failed commit's marker may still lie beside the one that replaced it.
      let next = scan.markers.filter { $0.firstSeq == h.headSeq &+ 1 && !aborted.contains(AbortedKey($0)) }
        .sorted { $0.committedAtNs > $1.committedAtNs }
      var chosen: (CommitMarker, [Found])?
      for m in next {
        if let records = try verify(m, scan: scan, head: h, shared: shared) {
          chosen = (m, records)
          break
        }
      }
      guard let (marker, records) = chosen else { break }
      try apply(marker, records, shared: shared)
      h = try shared.env.withRead { try readHeadState($0, shared.env.dbs) }
      recovered = (recovered?.lowerBound ?? marker.firstSeq)...marker.lastSeq
    }
    let rejected = Set(scan.markers.filter { $0.firstSeq > h.headSeq }).count
    if rejected == 0, scan.candidates.keys.contains(h.headSeq &+ 1) {
      shared.logger.warning(
        "event log: found records after the head without a sound commit marker (a commit torn by a crash, or damaged); the log ends at the head",
        metadata: ["head": "\(h.headSeq)", "directory": "\(dir)"])
    }
    if let recovered {
      try check(mdb_env_sync(shared.env.env, 1), "mdb_env_sync")
      shared.logger.warning(
        "event log: put back commits that a system crash cut off (their meta page had not reached the disk)",
        metadata: ["seqs": "\(recovered.lowerBound)...\(recovered.upperBound)", "directory": "\(dir)"])
    }
    if rejected > 0 {
      shared.logger.warning(
        "event log: found commits after the head that do not check out or had failed (torn by a crash before they returned); the log ends at the head",
        metadata: ["head": "\(h.headSeq)", "commits": "\(rejected)", "directory": "\(dir)"])
    }
    // The head read after a process crash may still be only in the page cache: make it durable before the
    // record of a failed commit at those seqs is cleared.
    try check(mdb_env_sync(shared.env.env, 1), "mdb_env_sync")
    try pruneAborted(directory: dir, head: h.headSeq)
    let report = CommitRecoveryReport(
      cleanClose: false, pagesScanned: scan.pages, nanoseconds: monotonicNs() - started, recovered: recovered, rejected: rejected)
    return (h, report)
  }

  /// One record found for a marker: its seq, stored value and decoded form (hash, aggregate).
  typealias Found = (seq: UInt64, value: [UInt8], record: EventRecord)

  /// The records `marker` names, each checked and chained from `head` to the marker's last hash; nil unless
  /// such a chain exists among the values found. Per seq only values with the CRC-32C the marker lists are
  /// tried (so a failed commit's record beside its replacement's is not); identical CRCs of different values
  /// are left to a bounded backtracking over the chain.
  static func verify(_ marker: CommitMarker, scan: CommitRecoveryScan.Result, head: PublishedState, shared: LogShared) throws -> [Found]? {
    let n = Int(marker.lastSeq - marker.firstSeq + 1)  // the marker's decoding bounds it by its CRC list
    guard marker.recordCRCs.count == n else { return nil }
    return try shared.env.withRead { txn -> [Found]? in
      let ctx = RecordDecoder(shared: shared)
      // Only values whose stored CRC-32C is the one the marker names for their seq (a failed commit's record
      // beside its replacement's has another).
      var options: [[[UInt8]]] = []
      options.reserveCapacity(min(n, 1 << 16))
      for i in 0..<n {
        let want = marker.recordCRCs[i]
        let values = (scan.candidates[marker.firstSeq + UInt64(i)] ?? []).filter { v in
          v.count >= 4 && v.withUnsafeBytes { UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: v.count - 4, as: UInt32.self)) } == want
        }
        if values.isEmpty { return nil }
        options.append(values)
      }
      var found: [Found] = []
      found.reserveCapacity(min(n, 1 << 16))
      var choice = [Int](repeating: -1, count: n)
      var budget = 4 * n + 64  // decodes; alternatives are rare, so the walk is nearly linear
      var i = 0
      while i >= 0 {
        if i == n {
          if found[n - 1].record.hash == marker.lastHash { return found }
          i -= 1
          found.removeLast()
          continue
        }
        let seq = marker.firstSeq + UInt64(i)
        let values = options[i]
        choice[i] += 1
        guard choice[i] < values.count else {
          choice[i] = -1
          i -= 1
          if i >= 0 { found.removeLast() }
          continue
        }
        budget -= 1
        guard budget >= 0 else { return nil }
        let prev = i == 0 ? head.headHash : found[i - 1].record.hash
        let value = values[choice[i]]
        if let record = try? value.withUnsafeBytes({ b in
          try shared.decode(RecordFormat.parse(b, key: seq), txn: txn, previousHash: prev, context: ctx)
        }) {
          found.append((seq, value, record))
          i += 1
        }
      }
      return nil
    }
  }

  /// Writes the records of one recovered commit back as the writer would have: records, chain checkpoints,
  /// aggregate versions, consumer checkpoints, head, format marker and the commit marker. Grows the map (up to
  /// the options' maximum) when the log's pages no longer fit the one it was opened with.
  static func apply(_ marker: CommitMarker, _ records: [Found], shared: LogShared) throws {
    let dbs = shared.env.dbs
    while true {
      do {
        try shared.env.withWrite { txn in try write(marker, records, txn: txn, dbs: dbs) }
        return
      } catch let e as EventLogError where e.code == .mapFull {
        let current = shared.env.mapSize
        guard current < shared.options.maxMapSize else { throw e }
        try shared.env.setMapSize(min(max(current * 2, current + 4096), shared.options.maxMapSize))
      }
    }
  }

  private static func write(_ marker: CommitMarker, _ records: [Found], txn: Transaction, dbs: Databases) throws {
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
