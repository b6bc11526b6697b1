import CLMDB
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// An append-only, LMDB-backed, zstd-compressed, hash-chained event log.
///
/// One log is one directory holding a standard LMDB environment (`data.mdb`, `lock.mdb`; `mdb_stat` and
/// `mdb_dump` from lmdb-utils can read it) with the named databases `events` (8-byte big-endian seq → record,
/// layout in ``RecordFormat``), `meta` (format version, head seq, head hash, active dictionary),
/// `snapshots`, `checkpoints`, `dicts` (zstd dictionaries by u32 id), `aggregates` (aggregate → version) and
/// `chain` (chain-hash checkpoints, ``ChainCheckpoints``; absent in logs only older builds wrote),
/// plus `writer.lock` (see below).
///
/// Exactly one process may open a directory for writing (an exclusive `flock` on `DIR/writer.lock`; a second
/// writer gets `.locked`). Any number of processes may open it with `Options.readOnly` at the same time
/// (LMDB supports multi-process readers). All methods are thread-safe.
public final class EventLog: Sendable {
  /// Largest accepted payload in bytes (uncompressed).
  public static let maxPayloadBytes = 1 << 30

  /// How durable a commit is before `append` returns (LMDB environment flags).
  public enum Durability: Sendable, Hashable {
    /// Every commit is durable when `append` returns, with one flush (issue 14): LMDB's `MDB_NOMETASYNC` —
    /// the commit's data pages are flushed (`fdatasync`), its meta page is written and reaches the disk with
    /// the next commit's flush or at ``EventLog/close()``. Each group commit also stores a ``CommitMarker``,
    /// so that after a system crash before that next flush the writable open puts the commit back from its
    /// flushed pages (``CommitRecovery``). Other write transactions (snapshots, dictionaries) flush their meta
    /// page at once (`mdb_env_sync`), as LMDB's default does.
    case sync
    /// `MDB_NOMETASYNC` relaxation: the meta page is not flushed per commit. A system crash may lose the last
    /// transactions but keeps the database consistent (LMDB docs). A process crash loses nothing.
    case noMetaSync
    /// `MDB_NOSYNC` relaxation: no flushes at all; the OS decides. A system crash may lose recent
    /// transactions (and with some file systems, integrity); a process crash loses nothing.
    case noSync

    var envFlags: Int32 {
      switch self {
      case .sync: return MDB_NOMETASYNC
      case .noMetaSync: return MDB_NOMETASYNC
      case .noSync: return MDB_NOSYNC
      }
    }
  }

  /// Open options. Sizes are bytes.
  public struct Options: Sendable {
    /// Initial LMDB map size in bytes (rounded up to 4 KiB). The map grows by doubling on `MDB_MAP_FULL`.
    public var initialMapSize: Int = 64 << 20
    /// Upper bound for map growth in bytes; beyond it appends fail with `.mapFull`.
    public var maxMapSize: Int = 1 << 40
    /// How durable a commit is when `append` returns (``Durability``); default `.sync`: every commit flushed.
    public var durability: Durability = .sync
    /// zstd compression level for snapshots (and ``Compressor/compress(_:dict:)``).
    public var compressionLevel: Int32 = 3
    /// zstd compression level for record bodies compressed with a trained dictionary (the level its digested
    /// form is made at). Fixture mix, trained 16 KiB dictionary, zstd 1.5.4 (issue 14): level 3 stores
    /// 26.8 B of block per body in 0.73 µs, level 4 25.2 B in 0.72 µs, level 5 25.0 B in 1.0 µs, level 9
    /// 24.3 B in 3.4 µs; hence 4.
    public var compressionLevelWithDictionary: Int32 = 4
    /// zstd compression level for record bodies while no dictionary is active. Without a dictionary, bodies
    /// of a few hundred bytes gain little from entropy-coded literals, which cost most of the time: fixture
    /// mix, 169-byte mean body, zstd 1.5.4 (issue 14) — level 3: 135 B in 4.4 µs; level −1: 140 B in 1.4 µs;
    /// with the trained dictionary, level 3: 30 B in 0.8 µs. Hence zstd's fast level −1 by default.
    public var compressionLevelWithoutDictionary: Int32 = -1
    /// Group-commit bound: at most this many events per write transaction (a larger single call runs alone).
    public var maxBatchEvents: Int = 4096
    /// Open without the writer lock in a read-only LMDB environment (`MDB_RDONLY`); writes throw `.readOnly`.
    public var readOnly: Bool = false
    /// Maximum records buffered per live subscriber before it is told it fell behind (a single commit with
    /// more matching records than this overflows the buffer by itself; the subscriber then catches up from
    /// history, so nothing is lost).
    public var subscriberBufferSize: Int = 1024
    /// Logger for operational messages (never payloads).
    public var logger: Logger = Logger(label: "openshell.eventlog")
    /// Walk `data.mdb` with bounds checks (``LMDBFileCheck``) before liblmdb maps it, so a damaged file is
    /// refused as `.corrupt` (naming the page) instead of crashing the process or opening as a new log. Skipped
    /// for a read-only open while another process writes the log (its pages change under the walk).
    public var checkFileStructure: Bool = true
    /// With ``checkFileStructure``, also check every record in that walk (``RecordCheckAtOpen``: checksum,
    /// gapless seqs up to `meta` head.seq, chain checkpoints' checksums) and refuse the open with
    /// `.corrupt` naming the seq otherwise; ``EventLog/recordsCheckedAtOpen`` then says so and a server's
    /// start skips its own checksum pass (issue 14: one read of the file instead of two; issue 17's checks).
    public var checkRecordsAtOpen: Bool = false
    /// With ``checkFileStructure``: the walk reads the `snapshots` database first and hands the newest snapshot
    /// of ``SnapshotPrefetch/name`` (as stored: still to be checked and decompressed) to
    /// ``SnapshotPrefetch/receive`` at once, before it walks the records, so that a caller can decode it on
    /// another thread meanwhile (issue 14: restart time). Not called when there is no such snapshot.
    public var snapshotPrefetch: SnapshotPrefetch?
    /// Set only by ``EventLog/openForBulkLoad(directory:options:)``: commits are not flushed (`MDB_NOSYNC`)
    /// until ``EventLog/finishBulkLoad()``, and the open accepts the directory's bulk-load marker.
    var bulkLoad = false

    /// The defaults documented on each property.
    public init() {}
  }

  /// One event of a catch-up subscription.
  public enum SubscriptionEvent: Sendable, Hashable {
    case record(EventRecord)
    /// The subscriber was too slow; records after `lastDelivered` follow again from history.
    case fellBehind(lastDelivered: UInt64)
  }

  /// The log directory.
  public let directory: String
  let shared: LogShared
  let writer: Writer?
  private let lock: WriterLockFile?
  private let closedFlag = Atomic<Bool>(false)
  /// What the structural walk of `data.mdb` found at open (nil when it was skipped or the file was new).
  public let fileReport: LMDBFileReport?
  /// The head seq at open when ``Options/checkRecordsAtOpen`` checked every record 1...it in the walk of
  /// `data.mdb` (checksums, seqs and checkpoints, as ``verify(checksumsOnly:progress:)`` does; a version 2
  /// record's header is parsed only when it is read); nil when no such check ran.
  public let recordsCheckedAtOpen: UInt64?
  /// What a writable open did about commits a system crash may have cut off (``CommitRecovery``); nil for
  /// read-only opens.
  public let commitRecovery: CommitRecoveryReport?

  private init(
    directory: String, shared: LogShared, writer: Writer?, lock: WriterLockFile?, fileReport: LMDBFileReport?,
    recordsCheckedAtOpen: UInt64?, commitRecovery: CommitRecoveryReport?
  ) {
    self.commitRecovery = commitRecovery
    self.fileReport = fileReport
    self.recordsCheckedAtOpen = recordsCheckedAtOpen
    self.directory = directory
    self.shared = shared
    self.writer = writer
    self.lock = lock
  }

  deinit { close() }

  /// The pid of the process that has the log in `directory` open for writing (-1 when it holds the lock but
  /// recorded no pid), or nil when no writer has it open. Used to find a gateway daemon by its data.
  public static func writerPID(directory: String) -> Int32? { WriterLockFile.holder(directory: directory) }

  /// Opens (creating it unless read-only) the log in `directory`.
  ///
  /// Throws `.locked` if another writer holds `DIR/writer.lock`, `.notFound` if `readOnly` and the log does
  /// not exist, `.corrupt` for an unknown format version or a `data.mdb` that fails the structural walk
  /// (``LMDBFileCheck``: an empty, truncated or damaged file; the message names the file and page), or
  /// LMDB/OS errors.
  public static func open(directory: String, options: Options = .init()) throws -> EventLog {
    var opts = options
    opts.initialMapSize = (max(opts.initialMapSize, 64 << 10) + 4095) & ~4095
    opts.maxMapSize = max(opts.maxMapSize, opts.initialMapSize)
    opts.maxBatchEvents = max(1, opts.maxBatchEvents)
    let fm = FileManager.default
    // A restore or import that did not finish left its marker: its records are incomplete (BulkLoad.swift).
    if !opts.bulkLoad { try refuseInterruptedBulkLoad(directory) }
    if opts.readOnly {
      guard fm.fileExists(atPath: directory + "/data.mdb") else {
        throw EventLogError(code: .notFound, message: "no event log at \(directory) (data.mdb missing)")
      }
    } else {
      do {
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
      } catch {
        throw EventLogError(code: .io, message: "cannot create \(directory): \(error)")
      }
    }
    let lock = opts.readOnly ? nil : try WriterLockFile(directory: directory)
    var fileReport: LMDBFileReport?
    var recordCheck: RecordCheckAtOpen?
    do {
      let data = directory + "/data.mdb"
      // An existing data.mdb (even 0 bytes) is checked; only a missing one starts a new log.
      if opts.checkFileStructure, fm.fileExists(atPath: data), !(opts.readOnly && WriterLockFile.holder(directory: directory) != nil) {
        recordCheck = opts.checkRecordsAtOpen ? RecordCheckAtOpen() : nil
        var checks = recordCheck?.walkChecks ?? [:]
        var walked: [String: () -> Void] = [:]
        if let prefetch = opts.snapshotPrefetch {
          let newest = SnapshotPrefetch.Newest(name: prefetch.name)
          checks["snapshots"] = { k, v in newest.see(key: k, value: v) }
          walked["snapshots"] = { if let found = newest.found { prefetch.receive(found) } }
        }
        let report = try LMDBFileCheck.check(
          path: data, values: checks, walkFirst: opts.snapshotPrefetch == nil ? [] : ["snapshots"], walked: walked)
        fileReport = report
        // An initialised log has every database; a missing one means a damaged name in the main tree, and
        // opening it would silently create an empty database in its place (a flipped "meta" = a new log).
        let missing = Databases.names.filter { !report.databaseNames.contains($0) }
        if !report.databaseNames.isEmpty, !missing.isEmpty {
          throw EventLogError(
            code: .corrupt,
            message:
              "\(data) is damaged at page \(report.mainTreeRoot) (main tree): it has no \(missing.map { "'\($0)'" }.joined(separator: ", ")) database (its main tree names \(report.databaseNames.map { "'\($0)'" }.joined(separator: ", ")))"
          )
        }
      }
      let env = try LMDBEnvironment(
        path: directory, mapSize: opts.initialMapSize,
        flags: opts.durability.envFlags | (opts.bulkLoad ? MDB_NOSYNC : 0), readOnly: opts.readOnly)
      do {
        let place = fileReport.map { "\(data) is damaged at page \($0.mainTreeRoot) (main tree)" } ?? "\(data) is damaged (main tree)"
        var head = try initialize(env, readOnly: opts.readOnly, damagedPlace: place)
        let checkedThrough = try recordCheck?.confirm(headSeq: head.headSeq)
        let shared = LogShared(env: env, directory: directory, options: opts, head: head, logger: opts.logger)
        // Before anything else writes: a write transaction could reuse the pages a cut-off commit left (only
        // `initialize` wrote so far, and it writes only when it creates a database — the `chain` database of a
        // log older builds wrote, which has no commit markers).
        var recovery: CommitRecoveryReport?
        if !opts.readOnly {
          let (recoveredHead, report) = try CommitRecovery.run(shared: shared, head: head, pagesInUse: fileReport?.pagesInUse)
          head = recoveredHead
          recovery = report
          shared.state.withLock { $0 = recoveredHead }
        }
        var writer: Writer?
        if !opts.readOnly {
          let dict = head.activeDictionaryID == 0 ? nil : try shared.dictionary(head.activeDictionaryID)
          writer = try Writer(shared: shared, head: head, activeDictionary: dict)
          writer?.start()
        }
        opts.logger.debug(
          "event log opened",
          metadata: ["directory": "\(directory)", "headSeq": "\(head.headSeq)", "readOnly": "\(opts.readOnly)"])
        return EventLog(
          directory: directory, shared: shared, writer: writer, lock: lock, fileReport: fileReport,
          recordsCheckedAtOpen: checkedThrough, commitRecovery: recovery)
      } catch {
        env.close()
        throw error
      }
    } catch {
      lock?.release()
      throw error
    }
  }

  /// Opens the named databases (creating them for a writer) and reads the head. The format marker is written
  /// with the first record this build appends (``Writer``), never by the open alone.
  /// `damagedPlace` starts the message when the `chain` database is missing from a log of format 2 (its
  /// name damaged in the main tree: creating an empty one would drop every checkpoint).
  private static func initialize(_ env: LMDBEnvironment, readOnly: Bool, damagedPlace: String) throws -> PublishedState {
    // Handles from a committed transaction stay valid for the environment's lifetime (LMDB docs), so even
    // the read-only open commits its transaction.
    let (dbs, head) = try env.withTransaction(readOnly: readOnly) { txn -> (Databases, PublishedState) in
      var d = Databases()
      let handles = try Databases.names.map { name -> MDB_dbi in
        do { return try txn.openDatabase(name, create: !readOnly) } catch let e as EventLogError
          where e.code == .notFound
        {
          throw EventLogError(code: .notFound, message: "event log has no '\(name)' database", lmdbCode: e.lmdbCode)
        }
      }
      (d.events, d.meta, d.snapshots, d.checkpoints, d.dicts, d.aggregates) =
        (handles[0], handles[1], handles[2], handles[3], handles[4], handles[5])
      do {
        d.chain = try txn.openDatabase(ChainCheckpoints.name, create: false)
      } catch let e as EventLogError where e.code == .notFound {
        // The first writer of format 2 creates it together with the format marker: a log marked 2 without it
        // lost it (a damaged name), and is refused rather than given an empty one.
        if let v = try txn.get(d.meta, MetaKey.format), let f = decodeBE32(v), f >= 2 {
          throw EventLogError.corrupt(nil, "\(damagedPlace): it has no '\(ChainCheckpoints.name)' database although its format is \(f)")
        }
        // Written by older builds only (v1 records only, no checkpoints): a writer creates it now.
        d.chain = readOnly ? nil : try txn.openDatabase(ChainCheckpoints.name, create: true)
      }
      if let v = try txn.get(d.meta, MetaKey.format) {
        guard let f = decodeBE32(v), f >= RecordFormat.readableLogFormats.lowerBound else {
          throw EventLogError.corrupt(nil, "unsupported log format \(v)")
        }
        // A newer build's log is not damaged: name the version and what to do, so no one restores a backup.
        guard f <= RecordFormat.readableLogFormats.upperBound else {
          let r = RecordFormat.readableLogFormats
          throw EventLogError(
            code: .invalidArgument,
            message:
              "log format \(f) was written by a newer openshell (this build reads formats \(r.lowerBound)…\(r.upperBound)): run that version or a later one; the log is not damaged",
            lmdbCode: nil)
        }
        // Not raised here: the writer raises it in the transaction of its first v3 record (Writer.formatMarked),
        // so an open that appends nothing (`openshell-replay rebuild` writes a snapshot only) leaves an older
        // build's log readable by that build.
      }
      return (d, try readHeadState(txn, d))
    }
    env.dbs = dbs
    return head
  }

  /// Sequence number of the newest record (0 for an empty log). For a read-only open this reads the current
  /// value written by the writer process.
  public var headSeq: UInt64 { currentHead().headSeq }

  /// Chain hash of the newest record (32 bytes; zeros for an empty log).
  public var headHash: [UInt8] { currentHead().headHash }

  /// Id of the zstd dictionary used for new appends (0 = none).
  public var activeDictionaryID: UInt32 { currentHead().activeDictionaryID }

  /// True if opened with `Options.readOnly`.
  public var isReadOnly: Bool { writer == nil }

  func currentHead() -> PublishedState {
    if isReadOnly, !closedFlag.load(ordering: .acquiring), let h = try? shared.readHead() { return h }
    return shared.state.withLock { $0 }
  }

  /// Stops the writer (queued appends finish first), ends subscriptions, closes LMDB and releases the writer
  /// lock. Idempotent; afterwards every call throws `.closed`.
  public func close() {
    if closedFlag.exchange(true, ordering: .acquiringAndReleasing) { return }
    writer?.stop()
    // Subscriptions end first (a server's shutdown tells their clients at once), then the flush below.
    shared.hub.closeAll()
    // The last commit's meta page to disk; then the next writable open need not look for cut-off commits.
    if writer != nil, !shared.env.closed, mdb_env_sync(shared.env.env, 1) == 0, !shared.bulkLoading.load(ordering: .acquiring) {
      let fd = Glibc.open(directory + "/" + CommitRecovery.cleanCloseFile, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
      if fd >= 0 { Glibc.close(fd) }
    }
    shared.env.close()
    lock?.release()
    shared.logger.debug("event log closed", metadata: ["directory": "\(directory)"])
  }

  func checkOpen() throws {
    if closedFlag.load(ordering: .acquiring) { throw EventLogError.closed() }
  }

  func requireWriter() throws -> Writer {
    try checkOpen()
    guard let writer else { throw EventLogError(code: .readOnly, message: "the event log was opened read-only") }
    return writer
  }

  /// The number of events stored for `ref` (its version; 0 if none).
  public func aggregateVersion(_ ref: AggregateRef) throws -> UInt64 {
    try checkOpen()
    return try shared.env.withRead { try readAggregateVersion($0, shared.env.dbs, ref) }
  }
}

extension LMDBEnvironment {
  /// Runs `body` in a transaction that is committed (used at open so database handles persist).
  func withTransaction<T>(readOnly ro: Bool, _ body: (Transaction) throws -> T) throws -> T {
    if !ro { return try withWrite(body) }
    // Another process may grow the map meanwhile (MDB_MAP_RESIZED): adopt its size and retry, as reads do.
    var resized = 0
    while true {
      let outcome: Result<T, any Error> = resizeLock.withShared {
        var t: OpaquePointer?
        let rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &t)
        if rc == MDB_MAP_RESIZED { return .failure(MapResizedRetry()) }
        do {
          try check(rc, "mdb_txn_begin(read)")
          guard let t else { throw EventLogError(code: .storage, message: "mdb_txn_begin returned no txn") }
          let txn = Transaction(ptr: t)
          let v: T
          do { v = try body(txn) } catch {
            txn.abort()
            throw error
          }
          try txn.commit()
          return .success(v)
        } catch { return .failure(error) }
      }
      switch outcome {
      case .success(let v): return v
      case .failure(let e as MapResizedRetry) where resized < 5:
        _ = e
        resized += 1
        try setMapSize(0)
      case .failure(let e): throw e
      }
    }
  }
}
