import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// What ``LMDBFileCheck/check(path:)`` found in a sound `data.mdb`.
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
}

/// A bounds-checked structural walk of an LMDB 0.9 data file, done with plain `pread` before liblmdb maps it.
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
/// - the free list: well-formed id lists of pages within the file that no tree uses.
///
/// Pages that are neither in a tree nor free (and bytes past `mm_last_pg`) are never read by liblmdb and are
/// not checked. Errors are `EventLogError.corrupt` naming the file and the page.
public enum LMDBFileCheck {
  static let headerSize = 16
  static let pMeta: UInt16 = 0x08, pBranch: UInt16 = 0x01, pLeaf: UInt16 = 0x02, pOverflow: UInt16 = 0x04
  static let fBigData: UInt16 = 0x01, fSubData: UInt16 = 0x02
  static let invalidPage = UInt64.max
  static let maxDepth = 32

  /// Walks `path` (a `data.mdb`). Throws `.corrupt` naming the first bad page, `.io` if it cannot be read.
  public static func check(path: String) throws -> LMDBFileReport {
    // O_NONBLOCK: a FIFO in data.mdb's place must not block the open.
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { throw EventLogError.posix("open \(path)") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw EventLogError.posix("stat \(path)") }
    guard st.st_mode & S_IFMT == S_IFREG else {
      throw EventLogError(code: .corrupt, message: "\(path) is damaged at header: it is not a regular file")
    }
    var walker = Walker(fd: fd, path: path, fileBytes: UInt64(st.st_size))
    return try walker.run()
  }

  struct DB {
    var pad: UInt32, flags: UInt16, depth: UInt16
    var branch: UInt64, leaf: UInt64, overflow: UInt64, entries: UInt64, root: UInt64

    init(_ b: [UInt8], at o: Int) {
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

  /// Walk state: pages seen, counts per tree.
  struct Walker {
    let fd: Int32
    let path: String
    let fileBytes: UInt64
    var psize = 4096
    var lastPage: UInt64 = 0
    var used: [Bool] = []
    var counts = (branch: UInt64(0), leaf: UInt64(0), overflow: UInt64(0), entries: UInt64(0))

    init(fd: Int32, path: String, fileBytes: UInt64) {
      self.fd = fd
      self.path = path
      self.fileBytes = fileBytes
    }

    func bad(_ page: UInt64?, _ why: String) -> EventLogError {
      let place = page.map { "page \($0)" } ?? "header"
      return EventLogError(code: .corrupt, message: "\(path) is damaged at \(place): \(why)")
    }

    func read(offset: UInt64, count: Int) throws -> [UInt8] {
      var buf = [UInt8](repeating: 0, count: count)
      let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
      guard n >= 0 else { throw EventLogError.posix("read \(path)") }
      guard n == count else { throw bad(offset / UInt64(max(psize, 1)), "file ends inside this page (truncated)") }
      return buf
    }

    func readMeta(_ i: Int, psizeGuess: Int) throws -> Meta {
      let p = try read(offset: UInt64(i * psizeGuess), count: 160)
      guard le64(p, 0) == UInt64(i), le16(p, 10) & pMeta != 0 else { throw bad(UInt64(i), "not a meta page") }
      guard le32(p, 16) == 0xBEEF_C0DE else { throw bad(UInt64(i), "meta page has a wrong magic number") }
      guard le32(p, 20) == 1 else { throw bad(UInt64(i), "unsupported LMDB data version \(le32(p, 20))") }
      let free = DB(p, at: 16 + 24)
      let main = DB(p, at: 16 + 72)
      return Meta(psize: Int(free.pad), free: free, main: main, lastPage: le64(p, 16 + 120), txnid: le64(p, 16 + 128))
    }

    mutating func run() throws -> LMDBFileReport {
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
      used = [Bool](repeating: false, count: Int(lastPage) + 1)
      used[0] = true
      used[1] = true
      // Free list first: its tree pages are in use; the page ids it lists are free.
      var freeIDs: [UInt64] = []
      let freeTree = try walkTree(cur.free, name: "free list", integerKeys: true) { data in
        guard data.count >= 8, data.count % 8 == 0, le64(data, 0) == UInt64(data.count / 8 - 1) else {
          return "free-list entry of \(data.count) bytes is not a page-id list"
        }
        for i in 1..<(data.count / 8) { freeIDs.append(le64(data, i * 8)) }
        return nil
      }
      var subDBs: [(String, DB)] = []
      let mainTree = try walkTree(cur.main, name: "main database", integerKeys: false, subDB: { name, db in subDBs.append((name, db)) }, leafData: nil)
      var pages = freeTree + mainTree
      for (name, db) in subDBs {
        guard db.flags == 0 || db.flags & ~0x7F == 0 else { throw bad(nil, "database '\(name)' has unknown flags \(db.flags)") }
        pages += try walkTree(db, name: "database '\(name)'", integerKeys: db.flags & 0x08 != 0, leafData: nil)
      }
      var freeSeen = Set<UInt64>()
      for id in freeIDs {
        guard id >= 2, id <= lastPage else { throw bad(id, "the free list names page \(id), outside the file's pages 2...\(lastPage)") }
        guard !used[Int(id)] else { throw bad(id, "page \(id) is both in use and on the free list") }
        guard freeSeen.insert(id).inserted else { throw bad(id, "page \(id) is on the free list twice") }
      }
      return LMDBFileReport(
        fileBytes: fileBytes, pageSize: ps, lastPage: lastPage, txnID: cur.txnid, treePages: pages,
        freePages: freeSeen.count, databaseNames: subDBs.map(\.0), mainTreeRoot: cur.main.root)
    }

    /// Walks one tree; `leafData` validates each plain (non-sub-database) value. Returns the pages it uses.
    mutating func walkTree(
      _ db: DB, name: String, integerKeys: Bool, subDB: ((String, DB) -> Void)? = nil,
      leafData: (([UInt8]) -> String?)?
    ) throws -> Int {
      if db.root == invalidPage {
        guard db.depth == 0, db.entries == 0, db.branch == 0, db.leaf == 0, db.overflow == 0 else {
          throw bad(nil, "\(name) is empty but records depth \(db.depth) and \(db.entries) entries")
        }
        return 0
      }
      guard db.depth >= 1, Int(db.depth) <= maxDepth else { throw bad(db.root, "\(name) has depth \(db.depth)") }
      counts = (0, 0, 0, 0)
      try walkPage(db.root, depth: 1, tree: db, name: name, lo: nil, hi: nil, integerKeys: integerKeys, subDB: subDB, leafData: leafData)
      guard counts.branch == db.branch, counts.leaf == db.leaf, counts.overflow == db.overflow, counts.entries == db.entries else {
        throw bad(
          db.root,
          "\(name) records \(db.branch)/\(db.leaf)/\(db.overflow) branch/leaf/overflow pages and \(db.entries) entries, but holds \(counts.branch)/\(counts.leaf)/\(counts.overflow) and \(counts.entries)"
        )
      }
      return Int(db.branch + db.leaf + db.overflow)
    }

    mutating func claim(_ p: UInt64, _ name: String) throws {
      guard p >= 2, p <= lastPage else { throw bad(p, "\(name) points to page \(p), outside the file's pages 2...\(lastPage)") }
      guard !used[Int(p)] else { throw bad(p, "page \(p) is used twice (\(name))") }
      used[Int(p)] = true
    }

    mutating func walkPage(
      _ p: UInt64, depth: Int, tree: DB, name: String, lo: [UInt8]?, hi: [UInt8]?, integerKeys: Bool,
      subDB: ((String, DB) -> Void)?, leafData: (([UInt8]) -> String?)?
    ) throws {
      try claim(p, name)
      let page = try read(offset: p * UInt64(psize), count: psize)
      guard le64(page, 0) == p else { throw bad(p, "page header names page \(le64(page, 0))") }
      let kind = le16(page, 10) & ~UInt16(0x10 | 0x8000)  // P_DIRTY, P_KEEP are in-memory flags
      let isBranch = kind == pBranch
      guard isBranch || kind == pLeaf else { throw bad(p, "\(name): page kind \(le16(page, 10)) where a branch or leaf page belongs") }
      guard isBranch == (depth < Int(tree.depth)) else { throw bad(p, "\(name): a \(isBranch ? "branch" : "leaf") page at depth \(depth) of \(tree.depth)") }
      let lower = Int(le16(page, 12))
      let upper = Int(le16(page, 14))
      guard lower >= headerSize, lower <= upper, upper <= psize, (lower - headerSize) % 2 == 0 else {
        throw bad(p, "\(name): free-space bounds \(lower)..\(upper) are invalid")
      }
      let n = (lower - headerSize) / 2
      guard n >= (isBranch ? 1 : (depth == 1 ? 0 : 1)) else { throw bad(p, "\(name): page has no entries") }
      if isBranch { counts.branch += 1 } else { counts.leaf += 1 }
      var prev: [UInt8]? = nil
      for i in 0..<n {
        let off = Int(le16(page, headerSize + 2 * i))
        guard off >= upper, off % 2 == 0, off + 8 <= psize else { throw bad(p, "\(name): entry \(i) at offset \(off) lies outside the page's data") }
        let nlo = UInt64(le16(page, off))
        let nhi = UInt64(le16(page, off + 2))
        let nflags = le16(page, off + 4)
        let ksize = Int(le16(page, off + 6))
        guard off + 8 + ksize <= psize else { throw bad(p, "\(name): entry \(i)'s key runs past the page") }
        let key = Array(page[(off + 8)..<(off + 8 + ksize)])
        // Branch entry 0 has an implicit lowest key.
        if !(isBranch && i == 0) {
          if integerKeys, ksize != 8 { throw bad(p, "\(name): integer key of \(ksize) bytes") }
          if let prev, compare(prev, key, integerKeys) >= 0 { throw bad(p, "\(name): keys out of order at entry \(i)") }
          if let lo, compare(key, lo, integerKeys) < 0 { throw bad(p, "\(name): entry \(i)'s key sorts before its parent's range") }
          if let hi, compare(key, hi, integerKeys) >= 0 { throw bad(p, "\(name): entry \(i)'s key sorts after its parent's range") }
          prev = key
        }
        if isBranch {
          let child = nlo | nhi << 16 | UInt64(nflags) << 32
          let childLo: [UInt8]? = i == 0 ? lo : key
          var childHi = hi
          if i + 1 < n {
            let o2 = Int(le16(page, headerSize + 2 * (i + 1)))
            guard o2 + 8 <= psize, o2 + 8 + Int(le16(page, o2 + 6)) <= psize else { throw bad(p, "\(name): entry \(i + 1) lies outside the page") }
            childHi = Array(page[(o2 + 8)..<(o2 + 8 + Int(le16(page, o2 + 6)))])
          }
          try walkPage(child, depth: depth + 1, tree: tree, name: name, lo: childLo, hi: childHi, integerKeys: integerKeys, subDB: subDB, leafData: leafData)
          continue
        }
        counts.entries += 1
        let dsize = Int(nlo | nhi << 16)
        guard nflags & ~(fBigData | fSubData) == 0, nflags != fBigData | fSubData else { throw bad(p, "\(name): entry \(i) has unknown flags \(nflags)") }
        var data: [UInt8] = []
        let wantData = leafData != nil || nflags & fSubData != 0
        if nflags & fBigData != 0 {
          guard off + 8 + ksize + 8 <= psize else { throw bad(p, "\(name): entry \(i)'s overflow page number runs past the page") }
          data = try readOverflow(le64(page, off + 8 + ksize), size: dsize, name: name, wantData: wantData)
        } else {
          guard off + 8 + ksize + dsize <= psize else { throw bad(p, "\(name): entry \(i)'s value runs past the page") }
          if wantData { data = Array(page[(off + 8 + ksize)..<(off + 8 + ksize + dsize)]) }
        }
        if nflags & fSubData != 0 {
          guard let subDB, dsize == 48 else { throw bad(p, "\(name): entry \(i) is a malformed sub-database") }
          subDB(String(decoding: key, as: UTF8.self), DB(data, at: 0))
        } else if let leafData, let why = leafData(data) {
          throw bad(p, "\(name): \(why)")
        }
      }
    }

    /// Reads an overflow run starting at `first` holding `size` bytes; checks and claims its pages.
    mutating func readOverflow(_ first: UInt64, size: Int, name: String, wantData: Bool) throws -> [UInt8] {
      try claim(first, name)
      let head = try read(offset: first * UInt64(psize), count: headerSize)
      guard le64(head, 0) == first, le16(head, 10) & pOverflow != 0 else { throw bad(first, "\(name): not an overflow page") }
      let pages = UInt64(le32(head, 12))
      let expected = UInt64((headerSize - 1 + size) / psize + 1)  // OVPAGES in mdb.c
      guard pages == expected else { throw bad(first, "\(name): overflow run of \(pages) pages for \(size) bytes (needs \(expected))") }
      guard first + pages - 1 <= lastPage else { throw bad(first, "\(name): overflow run ends past the last page \(lastPage)") }
      for q in (first + 1)..<(first + pages) { try claim(q, name) }
      counts.overflow += pages
      return wantData ? try read(offset: first * UInt64(psize) + UInt64(headerSize), count: size) : []
    }

    func compare(_ a: [UInt8], _ b: [UInt8], _ integer: Bool) -> Int {
      if integer {
        let x = le64(a, 0)
        let y = le64(b, 0)
        return x < y ? -1 : (x == y ? 0 : 1)
      }
      for (x, y) in zip(a, b) where x != y { return x < y ? -1 : 1 }
      return a.count - b.count
    }
  }
}

@inline(__always) private func le16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
@inline(__always) private func le32(_ b: [UInt8], _ o: Int) -> UInt32 {
  UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
}
@inline(__always) private func le64(_ b: [UInt8], _ o: Int) -> UInt64 { UInt64(le32(b, o)) | UInt64(le32(b, o + 4)) << 32 }
