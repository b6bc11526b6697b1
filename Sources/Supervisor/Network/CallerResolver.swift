import Crypto
import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Maps an accepted proxy connection to the binary that opened it (enforcement-and-ssh.md §1.4, row
/// "Caller identity"), from kernel state only:
///
/// 1. the peer's 4-tuple (sandbox address:port → proxy address:port) is looked up in the sandbox's
///    network namespace with an exact NETLINK_SOCK_DIAG request (``SocketDiag``), giving the socket
///    inode; when the kernel offers no sock_diag or does not find it there, in `/proc/<pid>/net/tcp` and
///    `tcp6` of a process inside that namespace (the same answer, but reading those tables walks the
///    kernel's whole connection hash: milliseconds per connection);
/// 2. the lowest pid holding `socket:[inode]` among the `/proc/<pid>/fd` of the processes in the
///    sandbox's network namespace (the supervisor's PID namespace holds only this sandbox's processes)
///    is the caller; its `/proc/<pid>/exe`, its ancestors' (up to the supervisor) and the absolute paths
///    on its command line are collected;
/// 3. the executable is hashed (SHA-256) through `/proc/<pid>/exe` itself; the hash is cached by
///    (dev, inode, size, mtime, ctime) so a binary is not re-hashed per connection, and pinned per path
///    on first use (trust on first use): a later different hash for the same path is refused.
///
/// Needs CAP_SYS_PTRACE (the workload runs as another user and is not dumpable) with a root gateway;
/// without root (``PrivateNetwork``) workloads run as the supervisor's own user and are dumpable after
/// their exec, so the same reads need no capability (the supervisor keeps CAP_SYS_PTRACE of its user
/// namespace anyway, for workloads that made themselves non-dumpable: fail closed otherwise, the
/// connection is denied with "cannot read the executable").
final class CallerResolver: Sendable {
  /// Inode of the sandbox's network namespace (`stat` of its nsfs file).
  let namespaceInode: UInt64
  /// The sock_diag socket in the sandbox's namespace; nil when unavailable (the `/proc` tables serve).
  let diag: SocketDiag?
  /// Why ``diag`` is nil (for the start-up log line).
  let diagProblem: String?
  private let hashes = Mutex<[String: String]>([:])
  private let pins = Mutex<[String: String]>([:])

  /// - Parameters:
  ///   - namespacePath: the sandbox's network namespace (nsfs file or `/proc/.../ns/net`).
  ///   - diag: a sock_diag socket already open in that namespace (``PrivateNetwork``), or why there is
  ///     none; nil: one is opened here (entering the namespace from a short-lived thread).
  /// - Throws: when the namespace file cannot be examined.
  init(namespacePath: String, diag: Result<SocketDiag, ResolveError>? = nil) throws {
    var st = stat()
    guard stat(namespacePath, &st) == 0 else {
      throw ResolveError(message: "cannot stat the network namespace \(namespacePath): \(String(cString: strerror(errno)))")
    }
    namespaceInode = UInt64(st.st_ino)
    let d = diag ?? Result { try SocketDiag(namespacePath: namespacePath) }.mapError { $0 as? ResolveError ?? ResolveError(message: "\($0)") }
    switch d {
    case .success(let s): (self.diag, diagProblem) = (s, nil)
    case .failure(let e): (self.diag, diagProblem) = (nil, e.message)
    }
  }

  struct ResolveError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
  }

  /// Resolves the caller of the connection from `peer` (sandbox side) to `local` (proxy side).
  /// - Throws: `ResolveError` when the socket or its process is not found, or the binary changed.
  func resolve(peer: (IPAddress, Int), local: (IPAddress, Int)) throws -> CallerBinary {
    let pids = sandboxPIDs()
    guard let reader = pids.first else { throw ResolveError(message: "no process runs in the sandbox network namespace") }
    // A refused sock_diag request (e.g. tcp_diag missing) falls back to the tables, as does a miss.
    var inode: UInt64? = try? diag?.tcpInode(local: peer, remote: local)
    for file in ["tcp", "tcp6"] where inode == nil {
      inode = Self.socketInode(procText("/proc/\(reader)/net/\(file)"), peer: peer, local: local)
    }
    guard let inode else { throw ResolveError(message: "connection \(peer.0):\(peer.1) not found in the sandbox's socket table") }
    let target = Array("socket:[\(inode)]".utf8)
    for pid in pids where ProcDirectory.holds(pid: pid, link: target) {
      return try identify(pid)
    }
    throw ResolveError(message: "no sandbox process holds socket \(inode)")
  }

  /// Pids of this PID namespace's processes that live in the sandbox's network namespace, ascending.
  func sandboxPIDs() -> [Int32] {
    let me = getpid()
    return ProcDirectory.pids().filter { pid in
      guard pid != me else { return false }
      var st = stat()
      return stat("/proc/\(pid)/ns/net", &st) == 0 && UInt64(st.st_ino) == namespaceInode
    }.sorted()
  }

  func identify(_ pid: Int32) throws -> CallerBinary {
    let exe = "/proc/\(pid)/exe"
    guard let path = try? FileManager.default.destinationOfSymbolicLink(atPath: exe) else {
      throw ResolveError(message: "cannot read the executable of pid \(pid)")
    }
    let hash = try sha256(exe, path: path)
    let pinned = pins.withLock { pins -> String in
      if let old = pins[path] { return old }
      pins[path] = hash
      return hash
    }
    guard pinned == hash else {
      throw ResolveError(message: "binary \(path) changed since its first use (SHA-256 \(hash.prefix(16))… ≠ pinned \(pinned.prefix(16))…)")
    }
    var ancestors: [String] = []
    var cursor = Self.parentPID(pid)
    let me = getpid()
    while let p = cursor, p > 1, p != me, ancestors.count < 64 {
      if let a = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(p)/exe") { ancestors.append(a) }
      cursor = Self.parentPID(p)
    }
    let cmdline = Self.procData("/proc/\(pid)/cmdline").split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    return CallerBinary(path: path, sha256: hash, ancestors: ancestors, cmdlinePaths: cmdline.filter { $0.hasPrefix("/") }, pid: pid)
  }

  /// SHA-256 of the executable behind `exe`, cached by the file's identity and times.
  func sha256(_ exe: String, path: String) throws -> String {
    let fd = open(exe, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ResolveError(message: "cannot open the executable \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw ResolveError(message: "cannot stat the executable \(path)") }
    let key = "\(st.st_dev)/\(st.st_ino)/\(st.st_size)/\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)/\(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec)"
    if let h = hashes.withLock({ $0[key] }) { return h }
    var hasher = SHA256()
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
      let n = read(fd, &buf, buf.count)
      if n < 0, errno == EINTR { continue }
      guard n >= 0 else { throw ResolveError(message: "cannot read the executable \(path)") }
      if n == 0 { break }
      buf.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
    }
    let hex = hasher.finalize().map { String(format: "%02x", $0) }.joined()
    hashes.withLock { $0[key] = hex }
    return hex
  }

  /// The inode of the socket whose local end is `peer` and remote end `local` (the workload's view).
  static func socketInode(_ table: String, peer: (IPAddress, Int), local: (IPAddress, Int)) -> UInt64? {
    for line in table.split(separator: "\n").dropFirst() {
      let f = line.split(separator: " ", omittingEmptySubsequences: true)
      guard f.count > 9, let l = endpoint(f[1]), let r = endpoint(f[2]) else { continue }
      if l.1 == peer.1, r.1 == local.1, l.0.unmapped == peer.0.unmapped, r.0.unmapped == local.0.unmapped {
        return UInt64(f[9])
      }
    }
    return nil
  }

  /// Parses `0100007F:1F90` (IPv4 as a host-order u32, or IPv6 as four host-order u32) and the port.
  static func endpoint(_ s: Substring) -> (IPAddress, Int)? {
    let parts = s.split(separator: ":")
    guard parts.count == 2, let port = Int(parts[1], radix: 16) else { return nil }
    let hex = Array(parts[0].utf8)
    guard hex.count == 8 || hex.count == 32 else { return nil }
    var bytes: [UInt8] = []
    for word in stride(from: 0, to: hex.count, by: 8) {
      guard let v = UInt32(String(decoding: hex[word..<word + 8], as: UTF8.self), radix: 16) else { return nil }
      let le = v.littleEndian
      bytes += [UInt8(le & 0xff), UInt8((le >> 8) & 0xff), UInt8((le >> 16) & 0xff), UInt8(le >> 24)]
    }
    return (IPAddress(bytes: bytes), port)
  }

  static func parentPID(_ pid: Int32) -> Int32? {
    let text = String(decoding: procData("/proc/\(pid)/stat"), as: UTF8.self)
    guard let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    return fields.count > 1 ? Int32(fields[1]) : nil
  }

  func procText(_ path: String) -> String { String(decoding: Self.procData(path), as: UTF8.self) }

  /// Reads a whole /proc file (Foundation's readers stop after the first page of some /proc files).
  static func procData(_ path: String) -> Data {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return Data() }
    defer { close(fd) }
    var out = Data()
    var buf = [UInt8](repeating: 0, count: 16384)
    while true {
      let n = read(fd, &buf, buf.count)
      if n < 0, errno == EINTR { continue }
      if n <= 0 { break }
      out.append(contentsOf: buf[0..<n])
    }
    return out
  }
}
