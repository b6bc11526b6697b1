import CLMDB
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

// Bulk load (issue 14: restore and import ≥ 2× SQLite). A restore or an import writes a whole log into a
// FRESH directory; nobody waits on an individual commit, so only the end result must be durable. A bulk
// load therefore commits its transactions without flushing (`MDB_NOSYNC`; records still go in with
// `MDB_APPEND` like every append) and makes everything durable once, when it finishes:
//
// 1. ``EventLog/openForBulkLoad(directory:options:)`` refuses a directory that holds a log, creates the
//    marker file ``EventLog/bulkLoadMarker`` (fsync of the file and of the directory) BEFORE `data.mdb`
//    exists, and opens the log with `MDB_NOSYNC`.
// 2. The caller appends in large calls (`appendSync`; a call larger than `maxBatchEvents` is one transaction).
// 3. ``EventLog/finishBulkLoad()`` flushes data and meta pages (`mdb_env_sync(env, 1)`), fsyncs the directory,
//    removes the marker, fsyncs the directory again, and switches the environment back to the durability of
//    its options, so later appends are durable as usual.
//
// Crash safety: until step 3 has completed, the marker exists on disk, and ``EventLog/open(directory:
// options:)`` refuses a directory holding it (`.corrupt`, "interrupted bulk load"): a restore or import
// killed midway is never opened as a silently half-loaded log; the tools build in a staging directory and
// redo the load. The live append path never uses `MDB_NOSYNC` (unless its options ask for `.noSync`).

extension EventLog {
  /// Name of the file that exists in a log directory while a bulk load into it has not finished.
  public static let bulkLoadMarker = "bulk-load.incomplete"

  /// Throws `.corrupt` when `directory` holds the marker of an unfinished bulk load.
  static func refuseInterruptedBulkLoad(_ directory: String) throws {
    if access(directory + "/" + bulkLoadMarker, F_OK) == 0 {
      throw EventLogError(
        code: .corrupt,
        message:
          "\(directory) holds an interrupted bulk load (restore or import; \(bulkLoadMarker) is present): its records are incomplete; delete the directory and run the restore or import again"
      )
    }
  }

  /// Opens a new log in `directory` (which must not hold a log) for a bulk load: commits are not flushed
  /// until ``finishBulkLoad()``, and until then the directory is marked so that no open accepts it.
  /// Appends work as usual (`appendSync` with large calls is fastest); readers see committed records.
  /// Throws `.invalidArgument` if the directory already holds a log or a marker, `.io` for file errors.
  public static func openForBulkLoad(directory: String, options: Options = .init()) throws -> EventLog {
    guard !options.readOnly else { throw EventLogError.invalid("a bulk load cannot be read-only") }
    let fm = FileManager.default
    if fm.fileExists(atPath: directory + "/data.mdb") || fm.fileExists(atPath: directory + "/" + bulkLoadMarker) {
      throw EventLogError.invalid("\(directory) already holds a log; a bulk load needs a new directory")
    }
    do {
      try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
    } catch {
      throw EventLogError(code: .io, message: "cannot create \(directory): \(error)")
    }
    let marker = directory + "/" + bulkLoadMarker
    let fd = Glibc.open(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw EventLogError.posix("create \(marker)") }
    let note = Array("a bulk load (restore or import) into this directory has not finished; the log is incomplete\n".utf8)
    let wrote = note.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    let synced = fsync(fd)
    Glibc.close(fd)
    guard wrote == note.count, synced == 0 else {
      let e = EventLogError.posix("write \(marker)")
      unlink(marker)
      throw e
    }
    try fsyncDirectory(directory)
    var o = options
    o.bulkLoad = true
    return try open(directory: directory, options: o)
  }

  /// True while this log is a bulk load that ``finishBulkLoad()`` has not finished.
  public var isBulkLoading: Bool { shared.bulkLoading.load(ordering: .acquiring) }

  /// Makes a bulk load durable and the log a normal one: flushes every committed page and the meta page to
  /// disk, fsyncs the directory, then removes the marker (fsync again) and restores the durability of the
  /// options. Call it after the last append returned. Throws `.invalidArgument` if this log is not a bulk
  /// load in progress, `.io` if a flush fails (the marker then stays: the load counts as interrupted).
  public func finishBulkLoad() throws {
    try checkOpen()
    guard shared.bulkLoading.load(ordering: .acquiring) else {
      throw EventLogError.invalid("the event log is not a bulk load in progress")
    }
    // Runs on the writer thread inside an empty write transaction, so no commit overlaps the flush.
    let env = shared.env
    let directory = directory
    let durable = shared.options.durability
    try performWrite { _, _ in
      try check(mdb_env_sync(env.env, 1), "mdb_env_sync")
      try fsyncDirectory(directory)
      guard unlink(directory + "/" + EventLog.bulkLoadMarker) == 0 else {
        throw EventLogError.posix("remove \(directory)/\(EventLog.bulkLoadMarker)")
      }
      try fsyncDirectory(directory)
      try check(mdb_env_set_flags(env.env, UInt32(MDB_NOSYNC), 0), "mdb_env_set_flags")
      if durable.envFlags != 0 { try check(mdb_env_set_flags(env.env, UInt32(durable.envFlags), 1), "mdb_env_set_flags") }
    }
    shared.bulkLoading.store(false, ordering: .releasing)
  }
}

/// fsync(2) of a directory, so the names created or removed in it are durable.
func fsyncDirectory(_ path: String) throws {
  let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
  guard fd >= 0 else { throw EventLogError.posix("open directory \(path)") }
  defer { close(fd) }
  guard fsync(fd) == 0 else { throw EventLogError.posix("fsync directory \(path)") }
}
