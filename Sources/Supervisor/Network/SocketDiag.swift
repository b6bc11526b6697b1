import CSockDiag
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Exact TCP socket lookups in the sandbox's network namespace through NETLINK_SOCK_DIAG (inet_diag):
/// the kernel finds the socket by its 4-tuple in its connection hash table, in about a microsecond,
/// where reading `/proc/<pid>/net/tcp` walks every bucket of that table for every connection (the
/// cost of the proxy's caller resolution before; see ``CallerResolver``).
///
/// The netlink socket is created once, inside the namespace (by a short-lived thread that enters it,
/// so no other thread ever changes namespace), and serves every lookup; lookups are serialised on it.
/// Needs CAP_SYS_ADMIN (setns), as the supervisor has.
final class SocketDiag: Sendable {
  private let fd: Mutex<Int32>

  /// - Throws: `CallerResolver.ResolveError` when the namespace cannot be entered or the kernel has no
  ///   NETLINK_SOCK_DIAG (the resolver then reads the `/proc` socket tables instead).
  init(namespacePath: String) throws {
    let ns = open(namespacePath, O_RDONLY | O_CLOEXEC)
    guard ns >= 0 else {
      throw CallerResolver.ResolveError(message: "cannot open the network namespace \(namespacePath): \(String(cString: strerror(errno)))")
    }
    defer { close(ns) }
    let s = csockdiag_open_in_netns(ns)
    guard s >= 0 else {
      throw CallerResolver.ResolveError(message: "no NETLINK_SOCK_DIAG socket in \(namespacePath): \(String(cString: strerror(-s)))")
    }
    fd = Mutex(s)
  }

  /// Adopts a NETLINK_SOCK_DIAG socket already created inside the namespace (``PrivateNetwork``).
  init(descriptor: Int32) { fd = Mutex(descriptor) }

  deinit { fd.withLock { close($0) } }

  /// The inode of the TCP socket whose local end is `local` and remote end `remote`, as the workload
  /// sees it (an IPv4 address is looked up as AF_INET, an IPv6 one as AF_INET6).
  /// - Returns: nil when no such (non-listening) socket exists in the namespace.
  /// - Throws: `CallerResolver.ResolveError` when the kernel refuses the request (e.g. no tcp_diag).
  func tcpInode(local: (IPAddress, Int), remote: (IPAddress, Int)) throws -> UInt64? {
    let (l, r) = (local.0.unmapped, remote.0.unmapped)
    guard l.bytes.count == r.bytes.count, (0...65535).contains(local.1), (0...65535).contains(remote.1) else { return nil }
    let family = l.bytes.count == 4 ? AF_INET : AF_INET6
    var inode: UInt32 = 0
    var uid: UInt32 = 0
    let rc = fd.withLock { s in
      l.bytes.withUnsafeBufferPointer { src in
        r.bytes.withUnsafeBufferPointer { dst in
          csockdiag_tcp_lookup(s, family, src.baseAddress, UInt16(local.1), dst.baseAddress, UInt16(remote.1), &inode, &uid)
        }
      }
    }
    if rc == -ENOENT { return nil }
    guard rc == 0 else { throw CallerResolver.ResolveError(message: "sock_diag lookup: \(String(cString: strerror(-rc)))") }
    return UInt64(inode)
  }
}
