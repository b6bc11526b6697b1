import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Small POSIX file helpers for the PKI directory: the directory is mode 0700, private keys 0600,
/// certificates 0644. Files are written to a temporary name, fsync'd and renamed, so a crash never
/// leaves a half-written key or certificate behind.
enum PKIFileStore {
  /// Creates `path` (and parents) if needed and forces mode 0700.
  static func ensureDirectory(_ path: String) throws {
    do {
      try FileManager.default.createDirectory(
        atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    } catch {
      throw GatewayPKIError.file(path: path, reason: "cannot create directory: \(error)")
    }
    guard chmod(path, 0o700) == 0 else {
      throw GatewayPKIError.file(path: path, reason: "chmod 0700 failed: \(String(cString: strerror(errno)))")
    }
  }

  static func exists(_ path: String) -> Bool {
    FileManager.default.fileExists(atPath: path)
  }

  /// Reads a UTF-8 text file.
  static func read(_ path: String) throws -> String {
    do {
      return try String(contentsOfFile: path, encoding: .utf8)
    } catch {
      throw GatewayPKIError.file(path: path, reason: "cannot read: \(error)")
    }
  }

  /// Atomically writes `contents` with the given mode (e.g. 0o600 for keys).
  static func write(_ contents: String, to path: String, mode: mode_t) throws {
    let temporary = path + ".tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else {
      throw GatewayPKIError.file(path: temporary, reason: "open failed: \(String(cString: strerror(errno)))")
    }
    var failure: String?
    if fchmod(fd, mode) != 0 { failure = "fchmod failed: \(String(cString: strerror(errno)))" }
    let bytes = Array(contents.utf8)
    var offset = 0
    while failure == nil && offset < bytes.count {
      let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
      if written < 0 {
        if errno == EINTR { continue }
        failure = "write failed: \(String(cString: strerror(errno)))"
      } else {
        offset += written
      }
    }
    if failure == nil && fsync(fd) != 0 { failure = "fsync failed: \(String(cString: strerror(errno)))" }
    close(fd)
    if failure == nil && rename(temporary, path) != 0 {
      failure = "rename failed: \(String(cString: strerror(errno)))"
    }
    if let failure {
      unlink(temporary)
      throw GatewayPKIError.file(path: path, reason: failure)
    }
  }

  /// Forces `mode` on an existing file (used to repair keys found with wider permissions).
  static func restrict(_ path: String, mode: mode_t) {
    _ = chmod(path, mode)
  }
}
