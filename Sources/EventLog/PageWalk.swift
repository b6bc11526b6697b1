import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// What ``LMDBFileCheck/check(path:values:)`` found in a sound `data.mdb`.
public struct LMDBFileReport: Sendable, Hashable {
  /// Size of the file in bytes.
  public var fileBytes: UInt64
  /// LMDB page size in bytes (from the meta page).
  public var pageSize: Int
  /// Highest page number in use (`mm_last_pg` of the current meta page).
  public var lastPage: UInt64
  /// Transaction id of the current meta page.
  public var txnID: UInt64
  /// Pages reachable from the current meta page (branch, leaf and overflow pages of every tree).
  public var treePages: Int
  /// Pages listed on LMDB's free list.
  public var freePages: Int
  /// Named databases found in the main tree.
  public var databases: Int { databaseNames.count }
  /// Their names, in key order.
  public var databaseNames: [String]
  /// Root page of the main tree (which names the databases).
  public var mainTreeRoot: UInt64
  /// Per page number up to ``lastPage``: whether a tree of the current meta page (or a meta page) uses it.
  /// ``CommitRecovery`` skips these pages: what a cut-off commit left is on the others.
  public var pagesInUse: [Bool] = []
}

/// Checks one plain value of a named database during ``LMDBFileCheck/check(path:values:)``, which visits the
/// entries of each database in key order. `key` and `value` point into the walk's mapping of the file (or its
/// buffers) and are valid only during the call. Throw an `EventLogError` (with `seq` when it names a record) to refuse the file; the walk
/// adds the file, the page and the database to its message.
public typealias LMDBValueCheck = (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Void

/// A bounds-checked structural walk of an LMDB 0.9 data file, done before liblmdb maps it, through a read-only
/// mapping of the walk's own (`pread` where the file cannot be mapped) in which no byte past the file's size at
/// the start of the walk is touched. (A file another process shortens during the walk, or a disk read error,
/// raises SIGBUS there as it would in liblmdb's own map; liblmdb itself never shortens `data.mdb`.)
///
/// LMDB 0.9 has no page checksums and trusts every page pointer, so a damaged file can make liblmdb read
/// outside the map (SIGSEGV/SIGBUS), loop, or silently serve an older state (issue 17). This walk checks what
/// liblmdb relies on, using the on-disk layout of LMDB 0.9 (`mdb.c`: `MDB_page`, `MDB_meta`, `MDB_db`,
/// `MDB_node`, 64-bit little-endian build):
/// - both meta pages: `P_META`, magic `0xBEEFC0DE`, data version 1, one page size; their transaction ids
///   alternate (meta page `txnid & 1` is written by each commit), so the two differ by one and the current
///   one sits on page `txnid & 1` — a flipped txnid cannot make liblmdb fall back to an older state unseen;
/// - the file holds every page up to `mm_last_pg` (a truncated file is refused, never treated as new);
/// - every tree (free list, main, each named database): page number field = its position, page kind, header
///   bounds (`PAGEHDRSZ ≤ lower ≤ upper ≤ page size`), every node inside its page, keys strictly ascending
///   within a page and inside the range its parent assigns, all leaves at the tree's depth (≤ 32, LMDB's
///   cursor stack), overflow runs of exactly the page count their data needs, each page used once, and the
///   page/entry counts recorded in `MDB_db`;
/// - the free list: well-formed id lists of pages within the file that no tree uses;
/// - optionally each value of the databases named in `values` (issue 14: the event log checks every record's
///   checksum here, in the one read of the file a start needs, instead of in a second pass).
///
/// Pages that are neither in a tree nor free (and bytes past `mm_last_pg`) are never read by liblmdb and are
/// not checked. Errors are `EventLogError.corrupt` naming the file and the page (and the seq a value check
/// names). Each page is read once (in place in the mapping, or into a buffer kept per tree level): no allocation
/// per page or entry.
public enum LMDBFileCheck {
  static let headerSize = 16
  static let pMeta: UInt16 = 0x08, pBranch: UInt16 = 0x01, pLeaf: UInt16 = 0x02, pOverflow: UInt16 = 0x04
  static let fBigData: UInt16 = 0x01, fSubData: UInt16 = 0x02
  static let invalidPage = UInt64.max
  static let maxDepth = 32

  /// Walks `path` (a `data.mdb`), running `values[name]` on every plain value of the named database `name`.
  /// The named databases in `walkFirst` are walked before the others (in that order), and `walked[name]` runs
  /// as soon as database `name` has been walked (e.g. to hand on what its value check collected while the
  /// rest of the file is walked). Throws `.corrupt` naming the first bad page, `.io` if it cannot be opened (or,
  /// on the `pread` path, read; a disk read error inside the mapping raises SIGBUS, as in liblmdb's own map).
  public static func check(
    path: String, values: [String: LMDBValueCheck] = [:], walkFirst: [String] = [], walked: [String: () -> Void] = [:]
  ) throws -> LMDBFileReport {
    // O_NONBLOCK: a FIFO in data.mdb's place must not block the open.
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { throw EventLogError.posix("open \(path)") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw EventLogError.posix("stat \(path)") }
    guard st.st_mode & S_IFMT == S_IFREG else {
      throw EventLogError(code: .corrupt, message: "\(path) is damaged at header: it is not a regular file")
    }
    // The walk reads the trees in key order, which after many commits is far from file order: ask the
    // kernel to read the file ahead (a start after a reboot would otherwise wait on many small reads).
    _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_WILLNEED))
    // Read through a mapping of its own: `pread` copied every page out of the page cache (issue 14: ~160 of the
    // ~430 ms a start of a 1M-event log spent in this walk, plus a system call per page). Every access is
    // bounds-checked against the size read above first; `pread` remains for a file that cannot be mapped.
    let bytes = Int(st.st_size)
    var mapped: UnsafeMutableRawPointer?
    if bytes > 0, let m = mmap(nil, bytes, PROT_READ, MAP_SHARED, fd, 0), m != MAP_FAILED { mapped = m }
    defer { if let mapped { munmap(mapped, bytes) } }
    let walker = Walker(
      fd: fd, path: path, fileBytes: UInt64(st.st_size), map: mapped.map { UnsafeRawPointer($0) }, checks: values, walkFirst: walkFirst,
      walked: walked)
    defer { walker.release() }
    return try walker.run()
  }

  @inline(__always) static func le16(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt16 {
    UInt16(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt16.self))
  }
  @inline(__always) static func le32(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt32 {
    UInt32(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt32.self))
  }
  @inline(__always) static func le64(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt64 {
    UInt64(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt64.self))
  }

  struct DB {
    var pad: UInt32, flags: UInt16, depth: UInt16
    var branch: UInt64, leaf: UInt64, overflow: UInt64, entries: UInt64, root: UInt64

    init(_ b: UnsafeRawBufferPointer, at o: Int) {
      pad = le32(b, o)
      flags = le16(b, o + 4)
      depth = le16(b, o + 6)
      branch = le64(b, o + 8)
      leaf = le64(b, o + 16)
      overflow = le64(b, o + 24)
      entries = le64(b, o + 32)
      root = le64(b, o + 40)
    }
  }

  struct Meta {
    var psize: Int, free: DB, main: DB, lastPage: UInt64, txnid: UInt64
  }
}

extension LMDBFileCheck.Walker {
  func readMeta(_ i: Int, psizeGuess: Int) throws -> LMDBFileCheck.Meta {
    let p = try read(offset: UInt64(i * psizeGuess), count: 160, into: scratch)
    guard LMDBFileCheck.le64(p, 0) == UInt64(i), LMDBFileCheck.le16(p, 10) & LMDBFileCheck.pMeta != 0 else { throw bad(UInt64(i), "not a meta page") }
    guard LMDBFileCheck.le32(p, 16) == 0xBEEF_C0DE else { throw bad(UInt64(i), "meta page has a wrong magic number") }
    guard LMDBFileCheck.le32(p, 20) == 1 else { throw bad(UInt64(i), "unsupported LMDB data version \(LMDBFileCheck.le32(p, 20))") }
    let free = LMDBFileCheck.DB(p, at: 16 + 24)
    let main = LMDBFileCheck.DB(p, at: 16 + 72)
    return .init(psize: Int(free.pad), free: free, main: main, lastPage: LMDBFileCheck.le64(p, 16 + 120), txnid: LMDBFileCheck.le64(p, 16 + 128))
  }

  func run() throws -> LMDBFileReport {
    guard fileBytes > 0 else {
      throw bad(nil, "the file is empty (0 bytes); an existing log is never empty — it was truncated or lost")
    }
    guard fileBytes >= 2 * 512 else { throw bad(nil, "the file is \(fileBytes) bytes, too short for LMDB's two meta pages") }
    let m0 = try readMeta(0, psizeGuess: 0)
    let ps = m0.psize
    guard ps >= 512, ps <= 65536, ps & (ps - 1) == 0 else { throw bad(0, "page size \(ps) is not a power of two in 512...65536") }
    psize = ps
    guard fileBytes >= UInt64(2 * ps) else { throw bad(1, "file ends inside the second meta page (truncated)") }
    let m1 = try readMeta(1, psizeGuess: ps)
    guard m1.psize == ps else { throw bad(1, "meta pages disagree on the page size (\(ps), \(m1.psize))") }
    // liblmdb (mdb_env_read_header) picks meta 1 only if its txnid is strictly greater.
    let (cur, curPage) = m1.txnid > m0.txnid ? (m1, UInt64(1)) : (m0, UInt64(0))
    let older = curPage == 1 ? m0 : m1
    if cur.txnid != 0 {
      guard cur.txnid & 1 == curPage, cur.txnid - older.txnid == 1 else {
        throw bad(curPage, "meta transaction ids \(m0.txnid)/\(m1.txnid) do not alternate (a damaged meta page would make LMDB serve an older state)")
      }
    }
    lastPage = cur.lastPage
    guard lastPage >= 1, lastPage < (UInt64(1) << 40) else { throw bad(curPage, "last page number \(lastPage) is out of range") }
    let needed = (lastPage + 1) * UInt64(ps)
    guard fileBytes >= needed else {
      throw bad(lastPage, "the file is \(fileBytes) bytes but its meta page uses \(needed) (truncated)")
    }
    allocatePages()
    used = [Bool](repeating: false, count: Int(lastPage) + 1)
    used[0] = true
    used[1] = true
    // Free list first: its tree pages are in use; the page ids it lists are free.
    var freeIDs: [UInt64] = []
    let freeTree = try walkTree(cur.free, name: "free list", integerKeys: true) { _, data in
      guard data.count >= 8, data.count % 8 == 0, LMDBFileCheck.le64(data, 0) == UInt64(data.count / 8 - 1) else {
        throw EventLogError(code: .corrupt, message: "free-list entry of \(data.count) bytes is not a page-id list")
      }
      for i in 1..<(data.count / 8) { freeIDs.append(LMDBFileCheck.le64(data, i * 8)) }
    }
    var subDBs: [(String, LMDBFileCheck.DB)] = []
    let mainTree = try walkTree(
      cur.main, name: "main database", integerKeys: false, subDB: { name, db in subDBs.append((name, db)) }, leafData: nil)
    var pages = freeTree + mainTree
    let first = walkFirst
    let rank = { (name: String) in first.firstIndex(of: name) ?? first.count }
    for (name, db) in subDBs.enumerated().sorted(by: { (rank($0.element.0), $0.offset) < (rank($1.element.0), $1.offset) }).map(\.element) {
      guard db.flags == 0 || db.flags & ~0x7F == 0 else { throw bad(nil, "database '\(name)' has unknown flags \(db.flags)") }
      pages += try walkTree(db, name: "database '\(name)'", integerKeys: db.flags & 0x08 != 0, leafData: checks[name])
      walked[name]?()
    }
    var freeSeen = Set<UInt64>()
    for id in freeIDs {
      guard id >= 2, id <= lastPage else { throw bad(id, "the free list names page \(id), outside the file's pages 2...\(lastPage)") }
      guard !used[Int(id)] else { throw bad(id, "page \(id) is both in use and on the free list") }
      guard freeSeen.insert(id).inserted else { throw bad(id, "page \(id) is on the free list twice") }
    }
    return LMDBFileReport(
      fileBytes: fileBytes, pageSize: ps, lastPage: lastPage, txnID: cur.txnid, treePages: pages,
      freePages: freeSeen.count, databaseNames: subDBs.map(\.0), mainTreeRoot: cur.main.root, pagesInUse: used)
  }
}
