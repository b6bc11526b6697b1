import Foundation

#if canImport(Glibc)
  import Glibc
#endif

extension LMDBFileCheck {
  /// Walk state of one ``LMDBFileCheck/check(path:values:)``: the file, the pages seen, the counts of the tree
  /// being walked and the read buffers (allocated once per walk; ``release()`` frees them).
  final class Walker {
    let fd: Int32
    let path: String
    let fileBytes: UInt64
    /// The file mapped read-only (`fileBytes` long), or nil when it could not be mapped (then `pread`).
    let map: UnsafeRawPointer?
    let checks: [String: LMDBValueCheck]
    let walkFirst: [String]
    let walked: [String: () -> Void]
    var psize = 4096
    var lastPage: UInt64 = 0
    var used: [Bool] = []
    var counts = (branch: UInt64(0), leaf: UInt64(0), overflow: UInt64(0), entries: UInt64(0))
    /// Meta pages and overflow headers (the first 256 bytes of a page).
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 16)
    /// `maxDepth` page buffers, one per tree level: a branch page stays in its buffer (its keys bound its
    /// children's) while the levels below reuse theirs.
    private var levels: UnsafeMutableRawBufferPointer?
    /// Values on overflow pages that a check reads, grown to the largest one.
    private var big = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 16)

    init(
      fd: Int32, path: String, fileBytes: UInt64, map: UnsafeRawPointer?, checks: [String: LMDBValueCheck], walkFirst: [String],
      walked: [String: () -> Void]
    ) {
      self.fd = fd
      self.path = path
      self.fileBytes = fileBytes
      self.map = map
      self.checks = checks
      self.walkFirst = walkFirst
      self.walked = walked
    }

    /// The per-level page buffers of the `pread` path (none when the file is mapped).
    func allocatePages() {
      levels?.deallocate()
      levels = map == nil ? .allocate(byteCount: psize * maxDepth, alignment: 16) : nil
    }

    func release() {
      scratch.deallocate()
      levels?.deallocate()
      levels = nil
      big.deallocate()
    }

    func bad(_ page: UInt64?, _ why: String) -> EventLogError {
      let place = page.map { "page \($0)" } ?? "header"
      return EventLogError(code: .corrupt, message: "\(path) is damaged at \(place): \(why)")
    }

    /// The `count` bytes at `offset`: inside the file's mapping (valid until the walk ends; nothing is copied), or
    /// read into `buffer` (at least `count` bytes long) when the file is not mapped. Bytes past the end of the
    /// file (`fileBytes`, from `fstat` before the walk) are never touched: such a read is refused as truncated.
    func read(offset: UInt64, count: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> UnsafeRawBufferPointer {
      if let map {
        guard offset <= fileBytes, UInt64(count) <= fileBytes - offset else {
          throw bad(offset / UInt64(max(psize, 1)), "file ends inside this page (truncated)")
        }
        return UnsafeRawBufferPointer(start: map + Int(offset), count: count)
      }
      var done = 0
      while done < count {
        let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
        if n < 0, errno == EINTR { continue }
        guard n >= 0 else { throw EventLogError.posix("read \(path)") }
        guard n > 0 else { throw bad(offset / UInt64(max(psize, 1)), "file ends inside this page (truncated)") }
        done += n
      }
      return UnsafeRawBufferPointer(start: buffer.baseAddress, count: count)
    }

    /// Walks one tree; `leafData` checks each plain (non-sub-database) value. Returns the pages it uses.
    func walkTree(
      _ db: DB, name: String, integerKeys: Bool, subDB: ((String, DB) -> Void)? = nil,
      leafData: LMDBValueCheck?
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

    func claim(_ p: UInt64, _ name: String) throws {
      guard p >= 2, p <= lastPage else { throw bad(p, "\(name) points to page \(p), outside the file's pages 2...\(lastPage)") }
      guard !used[Int(p)] else { throw bad(p, "page \(p) is used twice (\(name))") }
      used[Int(p)] = true
    }

    /// The key of node `i` of `page` (bounds checked by ``walkPage``'s first pass).
    @inline(__always) func nodeKey(_ page: UnsafeRawBufferPointer, _ i: Int) -> UnsafeRawBufferPointer {
      let off = Int(le16(page, headerSize + 2 * i))
      return UnsafeRawBufferPointer(start: page.baseAddress! + off + 8, count: Int(le16(page, off + 6)))
    }

    func walkPage(
      _ p: UInt64, depth: Int, tree: DB, name: String, lo: UnsafeRawBufferPointer?, hi: UnsafeRawBufferPointer?,
      integerKeys: Bool, subDB: ((String, DB) -> Void)?, leafData: LMDBValueCheck?
    ) throws {
      try claim(p, name)
      let buffer = levels.map { UnsafeMutableRawBufferPointer(rebasing: $0[((depth - 1) * psize)..<(depth * psize)]) } ?? scratch
      let page = try read(offset: p * UInt64(psize), count: psize, into: buffer)
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
      // First pass: every node and key inside the page (so a branch node's key may bound its left sibling).
      for i in 0..<n {
        let off = Int(le16(page, headerSize + 2 * i))
        guard off >= upper, off % 2 == 0, off + 8 <= psize else { throw bad(p, "\(name): entry \(i) at offset \(off) lies outside the page's data") }
        let ksize = Int(le16(page, off + 6))
        guard off + 8 + ksize <= psize else { throw bad(p, "\(name): entry \(i)'s key runs past the page") }
        // Branch entry 0 has an implicit lowest key.
        if integerKeys, ksize != 8, !(isBranch && i == 0) { throw bad(p, "\(name): integer key of \(ksize) bytes") }
      }
      var prev: UnsafeRawBufferPointer? = nil
      for i in 0..<n {
        let off = Int(le16(page, headerSize + 2 * i))
        let nlo = UInt64(le16(page, off))
        let nhi = UInt64(le16(page, off + 2))
        let nflags = le16(page, off + 4)
        let key = nodeKey(page, i)
        let ksize = key.count
        if !(isBranch && i == 0) {
          if let prev, compare(prev, key, integerKeys) >= 0 { throw bad(p, "\(name): keys out of order at entry \(i)") }
          if let lo, compare(key, lo, integerKeys) < 0 { throw bad(p, "\(name): entry \(i)'s key sorts before its parent's range") }
          if let hi, compare(key, hi, integerKeys) >= 0 { throw bad(p, "\(name): entry \(i)'s key sorts after its parent's range") }
          prev = key
        }
        if isBranch {
          let child = nlo | nhi << 16 | UInt64(nflags) << 32
          try walkPage(
            child, depth: depth + 1, tree: tree, name: name, lo: i == 0 ? lo : key, hi: i + 1 < n ? nodeKey(page, i + 1) : hi,
            integerKeys: integerKeys, subDB: subDB, leafData: leafData)
          continue
        }
        counts.entries += 1
        let dsize = Int(nlo | nhi << 16)
        guard nflags & ~(fBigData | fSubData) == 0, nflags != fBigData | fSubData else { throw bad(p, "\(name): entry \(i) has unknown flags \(nflags)") }
        var data = UnsafeRawBufferPointer(start: nil, count: 0)
        let wantData = leafData != nil || nflags & fSubData != 0
        if nflags & fBigData != 0 {
          guard off + 8 + ksize + 8 <= psize else { throw bad(p, "\(name): entry \(i)'s overflow page number runs past the page") }
          data = try readOverflow(le64(page, off + 8 + ksize), size: dsize, name: name, wantData: wantData)
        } else {
          guard off + 8 + ksize + dsize <= psize else { throw bad(p, "\(name): entry \(i)'s value runs past the page") }
          data = UnsafeRawBufferPointer(start: page.baseAddress! + off + 8 + ksize, count: dsize)
        }
        if nflags & fSubData != 0 {
          guard let subDB, dsize == 48 else { throw bad(p, "\(name): entry \(i) is a malformed sub-database") }
          subDB(String(decoding: key, as: UTF8.self), DB(data, at: 0))
        } else if let leafData {
          do { try leafData(key, data) } catch let e as EventLogError {
            if let seq = e.seq {
              throw EventLogError(code: .corrupt, message: "\(path) is damaged at seq \(seq) (page \(p), \(name)): \(e.message)", seq: seq)
            }
            throw bad(p, "\(name): \(e.message)")
          }
        }
      }
    }

    /// Reads an overflow run starting at `first` holding `size` bytes; checks and claims its pages. Returns the
    /// data (valid until the next overflow read) when `wantData`, else an empty buffer.
    func readOverflow(_ first: UInt64, size: Int, name: String, wantData: Bool) throws -> UnsafeRawBufferPointer {
      try claim(first, name)
      let head = try read(offset: first * UInt64(psize), count: headerSize, into: scratch)
      guard le64(head, 0) == first, le16(head, 10) & pOverflow != 0 else { throw bad(first, "\(name): not an overflow page") }
      let pages = UInt64(le32(head, 12))
      let expected = UInt64((headerSize - 1 + size) / psize + 1)  // OVPAGES in mdb.c
      guard pages == expected else { throw bad(first, "\(name): overflow run of \(pages) pages for \(size) bytes (needs \(expected))") }
      guard first + pages - 1 <= lastPage else { throw bad(first, "\(name): overflow run ends past the last page \(lastPage)") }
      for q in (first + 1)..<(first + pages) { try claim(q, name) }
      counts.overflow += pages
      guard wantData else { return UnsafeRawBufferPointer(start: nil, count: 0) }
      if big.count < size {
        big.deallocate()
        big = .allocate(byteCount: max(size, 2 * big.count), alignment: 16)
      }
      return try read(offset: first * UInt64(psize) + UInt64(headerSize), count: size, into: big)
    }

    /// LMDB's key order: native unsigned integers for `integer` (8-byte keys), else bytes (memcmp, then length).
    func compare(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ integer: Bool) -> Int {
      if integer {
        let x = le64(a, 0)
        let y = le64(b, 0)
        return x < y ? -1 : (x == y ? 0 : 1)
      }
      let n = min(a.count, b.count)
      if n > 0 {
        let r = memcmp(a.baseAddress!, b.baseAddress!, n)
        if r != 0 { return r < 0 ? -1 : 1 }
      }
      return a.count < b.count ? -1 : (a.count == b.count ? 0 : 1)
    }
  }
}
