import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The page scan behind ``CommitRecovery``: reads every page of a `data.mdb` with `pread` (no LMDB) and keeps
/// what a commit cut off by a crash may have left on pages the current meta page does not reach.
///
/// Uses LMDB 0.9's page and node layout (`mdb.c`, as ``LMDBFileCheck`` does): page header = page number (8),
/// pad (2), flags (2), lower (2), upper (2); a leaf's node offsets follow the header; a node = data size low
/// and high halves (2 + 2), flags (2), key size (2), key, then the value (or, with `F_BIGDATA`, the number of
/// the overflow page run holding it). Everything is bounds-checked: the pages may hold anything.
enum CommitRecoveryScan {
  struct Result {
    /// Markers whose first seq is after the head, each once.
    var markers: [CommitMarker] = []
    /// Values found under an 8-byte key greater than the head, by that key (the seq); distinct values only.
    var candidates: [UInt64: [[UInt8]]] = [:]
    /// Pages read.
    var pages = 0
    /// Where they were found (for tests that damage a lost commit on purpose).
    var markerPages: [UInt64] = []
    var candidatePages: [UInt64: [UInt64]] = [:]
  }

  /// What the page walk found.
  private struct Finds {
    var markers: [(CommitMarker, UInt64)] = []
    var values: [(seq: UInt64, page: UInt64, value: [UInt8])] = []
  }

  /// Page kinds a plain leaf never has: branch, overflow, meta, `P_LEAF2`, `P_SUBP`.
  static let notPlainLeaf: UInt16 = 0x01 | 0x04 | 0x08 | 0x20 | 0x40
  /// `F_DUPDATA` (the other page and node flags are ``LMDBFileCheck``'s).
  static let fDupData: UInt16 = 0x04
  private typealias L = LMDBFileCheck
  @inline(__always) private static func le16(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt16 { L.le16(b, o) }
  @inline(__always) private static func le64(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt64 { L.le64(b, o) }

  /// Scans `path`, skipping the pages `skipping` marks (those the current meta page's trees use: what a cut-off
  /// commit left is elsewhere, and values of live records, whose bytes callers chose, are not read as pages).
  /// Throws `.io` when the file cannot be read; a page that makes no sense is skipped.
  static func scan(path: String, after head: UInt64, skipping: [Bool]? = nil) throws -> Result {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw EventLogError.posix("open \(path)") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw EventLogError.posix("stat \(path)") }
    let size = Int(st.st_size)
    // The page size is the free-list database's `md_pad` in meta page 0 (offset 16 + 24).
    var ps32: UInt32 = 0
    guard size >= 64, pread(fd, &ps32, 4, 16 + 24) == 4 else { return Result() }
    let ps = Int(UInt32(littleEndian: ps32))
    guard ps >= 512, ps <= 65536, ps & (ps - 1) == 0 else { return Result() }
    let pageCount = size / ps
    var out = Result()
    var finds = Finds()
    let chunkPages = max(1, (1 << 20) / ps)
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkPages * ps, alignment: 16)
    defer { buf.deallocate() }
    var first = 2
    while first < pageCount {
      let n = min(chunkPages, pageCount - first)
      let got = pread(fd, buf.baseAddress, n * ps, off_t(first * ps))
      guard got == n * ps else { throw EventLogError.posix("read \(path)") }
      for i in 0..<n {
        let pgno = first + i
        if let skipping, pgno < skipping.count, skipping[pgno] { continue }
        out.pages += 1
        let page = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buf)[(i * ps)..<((i + 1) * ps)])
        guard le64(page, 0) == UInt64(pgno) else { continue }
        // Pages inside an overflow run are not skipped by its header: after a run is freed its pages are reused
        // one by one, and the first page's stale header would hide them. (So the bytes of a value on pages the
        // current tree does not use — the lost commit's own overflow runs, freed runs — are read as pages too;
        // what they seem to hold counts only if its chain follows the head's hash and its CRCs are the marker's.)
        let flags = le16(page, 10)
        guard flags & L.pLeaf != 0, flags & notPlainLeaf == 0 else { continue }
        leaf(page, pgno: UInt64(pgno), ps: ps, fd: fd, fileSize: size, head: head, into: &finds)
      }
      first += n
    }
    var seen = Set<CommitMarker>()
    for (m, page) in finds.markers where seen.insert(m).inserted {
      out.markers.append(m)
      out.markerPages.append(page)
    }
    for f in finds.values {
      if !(out.candidates[f.seq]?.contains(f.value) ?? false) { out.candidates[f.seq, default: []].append(f.value) }
      out.candidatePages[f.seq, default: []].append(f.page)
    }
    return out
  }

  /// Reads the nodes of one leaf page.
  private static func leaf(
    _ page: UnsafeRawBufferPointer, pgno: UInt64, ps: Int, fd: Int32, fileSize: Int, head: UInt64, into out: inout Finds
  ) {
    let lower = Int(le16(page, 12))
    let upper = Int(le16(page, 14))
    guard lower >= 16, lower <= upper, upper <= ps, (lower - 16) % 2 == 0 else { return }
    let count = (lower - 16) / 2
    for k in 0..<count {
      let off = Int(le16(page, 16 + 2 * k))
      guard off >= upper, off + 8 <= ps else { return }
      let dsize = Int(le16(page, off)) | Int(le16(page, off + 2)) << 16
      let nflags = le16(page, off + 4)
      let ksize = Int(le16(page, off + 6))
      let keyAt = off + 8
      guard keyAt + ksize <= ps, nflags & (L.fSubData | fDupData) == 0 else { continue }
      let key = UnsafeRawBufferPointer(rebasing: page[keyAt..<(keyAt + ksize)])
      let isMarkerKey = key.elementsEqual(CommitMarker.key)
      guard isMarkerKey || ksize == 8 else { continue }
      let seq = ksize == 8 ? key.reduce(UInt64(0)) { $0 << 8 | UInt64($1) } : 0
      guard isMarkerKey || seq > head else { continue }
      let big = nflags & L.fBigData != 0
      guard let value = nodeValue(page, at: keyAt + ksize, size: dsize, big: big, ps: ps, fd: fd, fileSize: fileSize) else { continue }
      if isMarkerKey {
        guard let m = value.withUnsafeBytes({ CommitMarker(decoding: $0) }), m.firstSeq > head else { continue }
        out.markers.append((m, pgno))
      } else {
        out.values.append((seq, pgno, value))
      }
    }
  }

  /// A node's value: on the page, or (`F_BIGDATA`) after the header of the overflow run it names. Nil when out
  /// of bounds.
  private static func nodeValue(
    _ page: UnsafeRawBufferPointer, at: Int, size: Int, big: Bool, ps: Int, fd: Int32, fileSize: Int
  ) -> [UInt8]? {
    if !big {
      guard at + size <= ps else { return nil }
      return Array(page[at..<(at + size)])
    }
    guard at + 8 <= ps, size <= 1 << 31 else { return nil }
    let raw = le64(page, at)  // any 8 bytes: compared as UInt64 before it becomes an Int
    guard raw >= 2, raw < UInt64(fileSize / ps) else { return nil }
    let run = Int(raw)
    guard run * ps + 16 + size <= fileSize else { return nil }
    var v = [UInt8](repeating: 0, count: size)
    let got = v.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, off_t(run * ps + 16)) }
    return got == size ? v : nil
  }
}
