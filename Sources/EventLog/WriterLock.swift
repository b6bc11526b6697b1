#if canImport(Glibc)
  import Glibc
#endif

/// Cross-process writer exclusivity: an exclusive, non-blocking `flock(2)` on `DIR/writer.lock`, held for
/// the lifetime of the open log. The holder writes its pid into the file so a second opener can name it.
/// flock locks belong to the open file description, so a second open in the same process conflicts too.
/// The lock is released by `close` or by the kernel when the process dies (also on SIGKILL).
///
/// A description can have more references than this descriptor: a child process that another thread forks
/// holds a copy of every descriptor from its fork until its exec closes the `O_CLOEXEC` ones, and a flock is
/// dropped only when the last reference is closed. So the lock is released explicitly (`LOCK_UN`, which acts on
/// the description whoever else refers to it) before the descriptor is closed: a log closed and reopened
/// while a parallel test or the gateway spawns a process was refused as "locked by another writer (pid
/// <own pid>)".
final class WriterLockFile: Sendable {
  let path: String
  /// The locked descriptor (internal for tests, which duplicate it as a forked child's copy would).
  let fd: Int32

  /// Acquires the lock or throws `.locked` (naming the holder's pid when known) or `.io`.
  init(directory: String) throws {
    path = directory + "/writer.lock"
    let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw EventLogError.posix("open(\(path))") }
    if flock(fd, LOCK_EX | LOCK_NB) != 0 {
      let e = currentErrno()
      var buf = [UInt8](repeating: 0, count: 32)
      let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
      close(fd)
      if e == EWOULDBLOCK || e == EAGAIN {
        let holder = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingWhitespace : ""
        let who = holder.isEmpty ? "another writer" : "another writer (pid \(holder))"
        throw EventLogError(
          code: .locked, message: "event log \(directory) is locked by \(who); open it read-only or stop that writer",
          errno: e)
      }
      throw EventLogError(code: .io, message: "flock(\(path)) failed", errno: e)
    }
    // Record our pid (best effort: a full disk must not prevent opening the log).
    let pid = Array("\(getpid())\n".utf8)
    if ftruncate(fd, 0) == 0 {
      _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }
    self.fd = fd
  }

  /// Whether a process holds the writer lock of `directory`, and its pid when it recorded one (-1 when not).
  /// Probes with a shared non-blocking flock, which conflicts only with a writer's exclusive lock.
  static func holder(directory: String) -> Int32? {
    let path = directory + "/writer.lock"
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    guard flock(fd, LOCK_SH | LOCK_NB) != 0, currentErrno() == EWOULDBLOCK else {
      // The probe took a shared lock: drop it explicitly, as ``release()`` does, so that a forked child's
      // copy of this descriptor cannot keep a writer out.
      _ = flock(fd, LOCK_UN)
      return nil
    }
    var buf = [UInt8](repeating: 0, count: 32)
    let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
    return n > 0 ? Int32(String(decoding: buf[0..<n], as: UTF8.self).trimmingWhitespace) ?? -1 : -1
  }

  /// Releases the lock, then closes the descriptor. `LOCK_UN` first: closing alone keeps the lock while a
  /// forked child still holds a copy of the descriptor (see the type's documentation).
  func release() {
    _ = flock(fd, LOCK_UN)
    close(fd)
  }
}

extension String {
  var trimmingWhitespace: String {
    var s = Substring(self)
    while let c = s.first, c.isWhitespace { s.removeFirst() }
    while let c = s.last, c.isWhitespace { s.removeLast() }
    return String(s)
  }
}
