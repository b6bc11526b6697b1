import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Writing a whole file with given permission bits: created or truncated, written, closed; optionally
/// through a temporary file renamed over it (`atomically`), optionally flushed to the disk first (`durable`).
///
/// One mechanism for the project's small files:
/// - the per-start files of a sandbox (certificates, token, launch description, identity files, trust
///   bundle) are neither: they are made again at every start, so none needs to survive a host crash, and
///   `FileManager.createFile(atPath:contents:attributes:)` would fsync each (issue 14: 8–10 flushes were
///   milliseconds of every CreateSandbox → READY);
/// - the trust bundle is `atomically` (a reader never sees half of it);
/// - the gateway's PKI files and the CLI's registry are `atomically` and `durable`.
public enum FileWriting {
  /// Why a write failed: the step (`open`, `fchmod`, `write`, `fsync`, `close`, `rename`) and the
  /// `strerror` text. Its description is "cannot write PATH: REASON".
  public struct Failure: Error, CustomStringConvertible, Sendable {
    /// The file that was to be written.
    public let path: String
    /// The system call that failed.
    public let step: String
    /// `strerror(errno)` of that call.
    public let reason: String
    /// "cannot write PATH: REASON".
    public var description: String { "cannot write \(path): \(reason)" }
  }

  /// Writes `bytes` to `path` with permission bits `mode` (set explicitly, whatever the umask).
  /// - Parameters:
  ///   - atomically: write `path.tmp-PID` and rename it over `path` (removed again on failure).
  ///   - durable: fsync the file before it is closed (and renamed).
  /// - Throws: ``Failure``.
  public static func write(_ path: String, _ bytes: some Collection<UInt8>, mode: mode_t, atomically: Bool = false, durable: Bool = false) throws {
    let target = atomically ? path + ".tmp-\(getpid())" : path
    let fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
    guard fd >= 0 else { throw Failure(path: path, step: "open", reason: String(cString: strerror(errno))) }
    var failure: (step: String, code: Int32)?
    if fchmod(fd, mode) != 0 { failure = ("fchmod", errno) }
    let data = Array(bytes)
    var offset = 0
    while failure == nil, offset < data.count {
      let n = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, data.count - offset) }
      if n > 0 {
        offset += n
      } else if n < 0, errno == EINTR {
        continue
      } else {
        failure = ("write", n < 0 ? errno : EIO)
      }
    }
    if failure == nil, durable, fsync(fd) != 0 { failure = ("fsync", errno) }
    if close(fd) != 0, failure == nil { failure = ("close", errno) }
    if failure == nil, atomically, rename(target, path) != 0 { failure = ("rename", errno) }
    if let failure {
      if atomically { unlink(target) }
      throw Failure(path: path, step: failure.step, reason: String(cString: strerror(failure.code)))
    }
  }

  /// ``write(_:_:mode:atomically:durable:)`` of a string's UTF-8.
  public static func write(_ path: String, _ text: String, mode: mode_t, atomically: Bool = false, durable: Bool = false) throws {
    try write(path, Array(text.utf8), mode: mode, atomically: atomically, durable: durable)
  }
}
