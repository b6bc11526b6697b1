import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Writing the small per-start files of a sandbox (certificates, token, launch description, identity
/// files, trust bundle): created or truncated, written, closed; no fsync.
///
/// Why not `FileManager.createFile(atPath:contents:attributes:)`: it writes a temporary file, fsyncs it
/// and renames it, a flush of the disk per file (issue 14: 8–10 of them were milliseconds of every
/// CreateSandbox → READY). These files are made again at every start of the sandbox, so none of them
/// needs to survive a host crash; a reader that must never see a half-written file gets it through
/// ``write(_:_:mode:atomically:)`` with `atomically` (a temporary file renamed over it).
public enum RunFile {
  /// Writes `bytes` to `path` with permission bits `mode` (set explicitly, whatever the umask).
  /// - Parameter atomically: write `path.tmp` and rename it over `path`.
  /// - Throws: ``SpawnError`` "cannot write PATH: REASON".
  public static func write(_ path: String, _ bytes: some Collection<UInt8>, mode: mode_t, atomically: Bool = false) throws {
    let target = atomically ? path + ".tmp" : path
    let fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
    guard fd >= 0 else { throw SpawnError("cannot write \(path): \(String(cString: strerror(errno)))") }
    var failure: Int32 = 0
    if fchmod(fd, mode) != 0 { failure = errno }
    let data = Array(bytes)
    var offset = 0
    while failure == 0, offset < data.count {
      let n = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, data.count - offset) }
      if n > 0 {
        offset += n
      } else if n < 0, errno == EINTR {
        continue
      } else {
        failure = n < 0 ? errno : EIO
      }
    }
    if close(fd) != 0, failure == 0 { failure = errno }
    if failure == 0, atomically, rename(target, path) != 0 { failure = errno }
    guard failure == 0 else {
      if atomically { unlink(target) }
      throw SpawnError("cannot write \(path): \(String(cString: strerror(failure)))")
    }
  }

  /// ``write(_:_:mode:atomically:)`` of a string's UTF-8.
  public static func write(_ path: String, _ text: String, mode: mode_t, atomically: Bool = false) throws {
    try write(path, Array(text.utf8), mode: mode, atomically: atomically)
  }
}
