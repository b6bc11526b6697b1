import Foundation
import SandboxProtocol

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

  /// Atomically and durably writes `contents` with the given mode (e.g. 0o600 for keys): a temporary file,
  /// fsync, rename (``FileWriting``).
  static func write(_ contents: String, to path: String, mode: mode_t) throws {
    do {
      try FileWriting.write(path, contents, mode: mode, atomically: true, durable: true)
    } catch let f as FileWriting.Failure {
      throw GatewayPKIError.file(path: f.step == "open" ? path + ".tmp-\(getpid())" : path, reason: "\(f.step) failed: \(f.reason)")
    }
  }

  /// Forces `mode` on an existing file (used to repair keys found with wider permissions).
  static func restrict(_ path: String, mode: mode_t) {
    _ = chmod(path, mode)
  }
}
