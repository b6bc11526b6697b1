import CLMDB
import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

// A thin, throwing wrapper around the LMDB C API (http://www.lmdb.tech/doc/group__mdb.html).
//
// Rules from the LMDB documentation that shape this file:
// - `mdb_env_set_mapsize` may only be called when the process has no active transaction; we guard every
//   transaction with a shared lock and take it exclusively to resize (`MapResizeLock`).
// - A read transaction may fail with `MDB_MAP_RESIZED` when another process grew the map; the fix is
//   `mdb_env_set_mapsize(env, 0)` (adopt the new size) and retrying.
// - With `MDB_NOTLS` a read transaction is tied to its `MDB_txn`, not to the thread, so readers may run on
//   any thread (Swift tasks hop threads). Write transactions are still thread-bound: only the writer thread
//   opens them.
// - A named database handle opened in a committed transaction stays valid for the environment's lifetime.

/// The named databases of one log environment.
struct Databases: Sendable {
  var events: MDB_dbi = 0
  var meta: MDB_dbi = 0
  var snapshots: MDB_dbi = 0
  var checkpoints: MDB_dbi = 0
  var dicts: MDB_dbi = 0
  var aggregates: MDB_dbi = 0
  /// Chain checkpoints (``ChainCheckpoints``); nil in a log no writer of format 2 has opened yet (read-only).
  var chain: MDB_dbi?

  /// Databases every initialised log has (`chain` is created by the first writer of format 2).
  static let names = ["events", "meta", "snapshots", "checkpoints", "dicts", "aggregates"]
}

/// A pthread read/write lock: transactions hold it shared, a map resize holds it exclusively.
final class MapResizeLock: @unchecked Sendable {
  private let lock: UnsafeMutablePointer<pthread_rwlock_t>
  init() {
    lock = .allocate(capacity: 1)
    lock.initialize(to: pthread_rwlock_t())
    pthread_rwlock_init(lock, nil)
  }
  deinit {
    pthread_rwlock_destroy(lock)
    lock.deallocate()
  }
  func withShared<T>(_ body: () throws -> T) rethrows -> T {
    pthread_rwlock_rdlock(lock)
    defer { pthread_rwlock_unlock(lock) }
    return try body()
  }
  func withExclusive<T>(_ body: () throws -> T) rethrows -> T {
    pthread_rwlock_wrlock(lock)
    defer { pthread_rwlock_unlock(lock) }
    return try body()
  }
}

/// Throws ``EventLogError`` for a non-zero LMDB return code.
@inline(__always)
func check(_ rc: Int32, _ operation: @autoclosure () -> String) throws {
  if rc != 0 { throw EventLogError.lmdb(rc, operation()) }
}

/// One LMDB environment (a directory holding `data.mdb` and `lock.mdb`).
final class LMDBEnvironment: @unchecked Sendable {
  let env: OpaquePointer
  let readOnly: Bool
  let resizeLock = MapResizeLock()
  private let isClosed = Atomic<Bool>(false)
  /// Set once during open, before the environment is shared.
  var dbs = Databases()

  /// Creates and opens the environment. `flags` are `MDB_*` environment flags; `MDB_NOTLS` is always added.
  init(path: String, mapSize: Int, flags: Int32, readOnly: Bool) throws {
    var e: OpaquePointer?
    try check(mdb_env_create(&e), "mdb_env_create")
    guard let e else { throw EventLogError(code: .storage, message: "mdb_env_create returned no env") }
    do {
      try check(mdb_env_set_maxdbs(e, 16), "mdb_env_set_maxdbs")
      try check(mdb_env_set_mapsize(e, mapSize), "mdb_env_set_mapsize")
      var f = UInt32(flags) | UInt32(MDB_NOTLS)
      if readOnly { f |= UInt32(MDB_RDONLY) }
      try check(mdb_env_open(e, path, f, 0o644), "mdb_env_open(\(path))")
      try Self.checkNotTruncated(e, path: path)
    } catch {
      mdb_env_close(e)
      throw error
    }
    env = e
    self.readOnly = readOnly
  }

  /// LMDB maps data.mdb and trusts its meta page: reading a page past the end of a truncated file
  /// raises SIGBUS. So the file must hold at least `(me_last_pgno + 1) × page size` bytes
  /// (`mdb_env_info`, `mdb_env_stat`), else the log is reported corrupt instead of crashing.
  static func checkNotTruncated(_ e: OpaquePointer, path: String) throws {
    var info = MDB_envinfo()
    var stat = MDB_stat()
    guard mdb_env_info(e, &info) == 0, mdb_env_stat(e, &stat) == 0 else { return }
    let needed = (UInt64(info.me_last_pgno) + 1) * UInt64(stat.ms_psize)
    guard let size = (try? FileManager.default.attributesOfItem(atPath: path + "/data.mdb"))?[.size] as? UInt64 else { return }
    if size < needed {
      throw EventLogError(
        code: .corrupt,
        message: "\(path)/data.mdb is truncated: \(size) bytes, but its meta page references \(needed) bytes")
    }
  }

  var closed: Bool { isClosed.load(ordering: .acquiring) }

  /// Closes the environment once; callers must have stopped all transactions (we take the resize lock
  /// exclusively, so no transaction of ours is running).
  func close() {
    resizeLock.withExclusive {
      if isClosed.exchange(true, ordering: .acquiringAndReleasing) { return }
      mdb_env_close(env)
    }
  }

  /// Current map size in bytes (`mdb_env_info`).
  var mapSize: Int { info().mapSize }

  /// Map size and bytes in use ((last page + 1) × page size) and the page size, from
  /// `mdb_env_info`/`mdb_env_stat`; zeros once closed.
  func info() -> (mapSize: Int, usedBytes: Int, pageSize: Int) {
    resizeLock.withShared {
      if closed { return (0, 0, 0) }
      var info = MDB_envinfo()
      var st = MDB_stat()
      mdb_env_info(env, &info)
      mdb_env_stat(env, &st)
      return (info.me_mapsize, (info.me_last_pgno + 1) * Int(st.ms_psize), Int(st.ms_psize))
    }
  }

  /// Sets the map size (bytes); `0` adopts the size another process set. Takes the resize lock exclusively.
  func setMapSize(_ bytes: Int) throws {
    try resizeLock.withExclusive {
      if closed { throw EventLogError.closed() }
      try check(mdb_env_set_mapsize(env, bytes), "mdb_env_set_mapsize(\(bytes))")
    }
  }

  /// Begins a transaction, adopting a map grown by another process on `MDB_MAP_RESIZED`.
  /// The caller must hold the resize lock shared and must not use the transaction after releasing it.
  fileprivate func begin(readOnly ro: Bool) throws -> Transaction {
    if closed { throw EventLogError.closed() }
    var t: OpaquePointer?
    let rc = mdb_txn_begin(env, nil, ro ? UInt32(MDB_RDONLY) : 0, &t)
    // The shared resize lock must be released before adopting the new size exclusively, so signal the
    // caller with a marker error instead of resizing here.
    if rc == MDB_MAP_RESIZED { throw MapResizedRetry() }
    try check(rc, ro ? "mdb_txn_begin(read)" : "mdb_txn_begin(write)")
    guard let t else { throw EventLogError(code: .storage, message: "mdb_txn_begin returned no txn") }
    return Transaction(ptr: t)
  }

  /// Runs `body` in a short read transaction (aborted afterwards; reads need no commit).
  func withRead<T>(_ body: (Transaction) throws -> T) throws -> T {
    var resized = 0
    while true {
      do {
        return try resizeLock.withShared {
          let txn = try begin(readOnly: true)
          defer { txn.abort() }
          return try body(txn)
        }
      } catch is MapResizedRetry where resized < 5 {
        resized += 1
        try setMapSize(0)
      }
    }
  }

  /// Runs `body` in a write transaction and commits it. Only the writer thread (or open) calls this.
  /// Errors from `body` abort the transaction. `MDB_MAP_FULL` is rethrown for the caller to grow and retry.
  func withWrite<T>(_ body: (Transaction) throws -> T) throws -> T {
    var resized = 0
    while true {
      do {
        return try resizeLock.withShared {
          let txn = try begin(readOnly: false)
          let value: T
          do { value = try body(txn) } catch {
            txn.abort()
            throw error
          }
          try txn.commit()
          return value
        }
      } catch is MapResizedRetry where resized < 5 {
        resized += 1
        try setMapSize(0)
      }
    }
  }
}

struct MapResizedRetry: Error {}

/// An open LMDB transaction (value type wrapping `MDB_txn*`).
struct Transaction {
  let ptr: OpaquePointer

  func abort() { mdb_txn_abort(ptr) }

  /// `mdb_txn_commit`; the transaction is freed whatever the outcome (LMDB docs).
  func commit() throws { try check(mdb_txn_commit(ptr), "mdb_txn_commit") }

  func openDatabase(_ name: String, create: Bool) throws -> MDB_dbi {
    var dbi: MDB_dbi = 0
    try check(mdb_dbi_open(ptr, name, create ? UInt32(MDB_CREATE) : 0, &dbi), "mdb_dbi_open(\(name))")
    return dbi
  }

  /// Calls `body` with the value stored under `key` (valid only inside the transaction), or nil.
  func withValue<T>(_ dbi: MDB_dbi, _ key: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T? {
    try key.withUnsafeBytes { kb in
      var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
      var v = MDB_val()
      let rc = mdb_get(ptr, dbi, &k, &v)
      if rc == MDB_NOTFOUND { return nil }
      try check(rc, "mdb_get")
      return try body(UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
    }
  }

  /// Copies the value stored under `key`, or nil.
  func get(_ dbi: MDB_dbi, _ key: [UInt8]) throws -> [UInt8]? {
    try withValue(dbi, key) { Array($0) }
  }

  /// `mdb_put` with `flags` (e.g. `MDB_APPEND`, see LMDB docs: keys must then be greater than all others).
  func put(_ dbi: MDB_dbi, _ key: [UInt8], _ value: [UInt8], flags: Int32 = 0) throws {
    try key.withUnsafeBytes { kb in
      try value.withUnsafeBytes { vb in
        var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
        var v = MDB_val(mv_size: vb.count, mv_data: UnsafeMutableRawPointer(mutating: vb.baseAddress))
        try check(mdb_put(ptr, dbi, &k, &v, UInt32(flags)), "mdb_put")
      }
    }
  }

  /// `mdb_put` of `count` bytes under the 8-byte big-endian key `seq` with `MDB_RESERVE` (plus `flags`, e.g.
  /// `MDB_APPEND`): `fill` writes the value straight into the database page (no intermediate copy).
  func putReserved(
    _ dbi: MDB_dbi, seq: UInt64, count: Int, flags: Int32 = 0, _ fill: (UnsafeMutableRawBufferPointer) -> Void
  ) throws {
    var key = seq.bigEndian
    try withUnsafeMutableBytes(of: &key) { kb in
      var k = MDB_val(mv_size: 8, mv_data: kb.baseAddress)
      var v = MDB_val(mv_size: count, mv_data: nil)
      try check(mdb_put(ptr, dbi, &k, &v, UInt32(flags | MDB_RESERVE)), "mdb_put")
      fill(UnsafeMutableRawBufferPointer(start: v.mv_data, count: count))
    }
  }

  /// `mdb_del` of `key` (all values). - Returns: false when the key did not exist.
  @discardableResult
  func delete(_ dbi: MDB_dbi, _ key: [UInt8]) throws -> Bool {
    try key.withUnsafeBytes { kb in
      var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
      let rc = mdb_del(ptr, dbi, &k, nil)
      if rc == MDB_NOTFOUND { return false }
      try check(rc, "mdb_del")
      return true
    }
  }

  func cursor(_ dbi: MDB_dbi) throws -> Cursor {
    var c: OpaquePointer?
    try check(mdb_cursor_open(ptr, dbi, &c), "mdb_cursor_open")
    guard let c else { throw EventLogError(code: .storage, message: "mdb_cursor_open returned no cursor") }
    return Cursor(ptr: c)
  }

  /// Number of entries in `dbi` (`mdb_stat`).
  func entries(_ dbi: MDB_dbi) throws -> Int {
    var st = MDB_stat()
    try check(mdb_stat(ptr, dbi, &st), "mdb_stat")
    return st.ms_entries
  }

  /// Pages `dbi` uses: branch + leaf + overflow (`mdb_stat`).
  func pages(_ dbi: MDB_dbi) throws -> Int {
    var st = MDB_stat()
    try check(mdb_stat(ptr, dbi, &st), "mdb_stat")
    return st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages
  }
}

/// An LMDB cursor; close it before its transaction ends.
struct Cursor {
  let ptr: OpaquePointer

  func close() { mdb_cursor_close(ptr) }

  /// Positions the cursor (`MDB_FIRST`, `MDB_NEXT`, `MDB_SET_RANGE`, `MDB_LAST`, `MDB_PREV`, …) and calls
  /// `body` with key and value (valid inside the transaction). Returns nil at the end (`MDB_NOTFOUND`).
  func get<T>(
    _ op: MDB_cursor_op, key: [UInt8]? = nil,
    _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> T
  ) throws -> T? {
    var k = MDB_val()
    var v = MDB_val()
    let rc: Int32
    if let key {
      rc = key.withUnsafeBytes { kb in
        k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
        return mdb_cursor_get(ptr, &k, &v, op)
      }
    } else {
      rc = mdb_cursor_get(ptr, &k, &v, op)
    }
    if rc == MDB_NOTFOUND { return nil }
    try check(rc, "mdb_cursor_get")
    return try body(
      UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size),
      UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
  }
}
