#if canImport(Glibc)
  import Glibc
#endif

/// Directory walks of `/proc` for the caller resolution (``CallerResolver``) with plain
/// `readdir`/`readlinkat` on one open directory, without building a path string and a Foundation
/// object per entry (this runs for every proxy connection).
enum ProcDirectory {
  /// The numeric entries of `/proc`: the pids of the calling process's PID namespace (unordered).
  static func pids() -> [Int32] {
    var out: [Int32] = []
    entries("/proc") { _, name in
      if let pid = Int32(name) { out.append(pid) }
      return false
    }
    return out
  }

  /// Whether one of `pid`'s open descriptors is `link` (the bytes of its `/proc/<pid>/fd/N` link,
  /// e.g. `socket:[1234]`). A process that has exited or cannot be examined holds nothing.
  static func holds(pid: Int32, link: [UInt8]) -> Bool {
    var buffer = [UInt8](repeating: 0, count: link.count + 1)
    var found = false
    entries("/proc/\(pid)/fd") { dir, name in
      let n = buffer.withUnsafeMutableBytes { readlinkat(dir, name, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
      if n == link.count, buffer[0..<n].elementsEqual(link) { found = true }
      return found
    }
    return found
  }

  /// Calls `body(directory fd, name)` for every entry of `path` except `.` and `..` until it returns
  /// true; a directory that cannot be opened has no entries.
  static func entries(_ path: String, _ body: (Int32, String) -> Bool) {
    guard let dir = opendir(path) else { return }
    defer { closedir(dir) }
    let fd = dirfd(dir)
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
      }
      if name == "." || name == ".." { continue }
      if body(fd, name) { return }
    }
  }
}
