import CSockDiag
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// The sandbox's network namespace when the gateway is not root (issue 10, "Confinement": the
/// variant that works without root; OpenShell: enforcement-and-ssh.md §1.4, row "Network namespace").
///
/// Without root on the host there is no veth pair and no nftables. Instead the supervisor, which runs
/// in bubblewrap's user namespace with CAP_SYS_ADMIN/CAP_NET_ADMIN *of that namespace only*, creates a
/// new network namespace at start whose only interface is `lo`: nothing in it routes anywhere, so a
/// direct TCP connect to any address but its own loopback fails with ENETUNREACH, a UDP send likewise,
/// and its loopback holds nothing of the host (the gateway port, host services) — connection refused.
/// The proxy's listening socket is created *inside* that namespace, bound to `127.0.0.1:3128`, and
/// then served by the supervisor, whose own threads stay in the host namespace: the agent reaches the
/// proxy through its own loopback, and only the proxy reaches out. There is no forwarder process: the
/// socket itself crosses the namespace boundary (a socket belongs to the namespace it was created in).
///
/// One supervisor thread creates the namespace and stays parked in it (``csockdiag_private_netns``);
/// `/proc/<supervisor pid>/task/<tid>/ns/net` names it for the launcher, which enters it (setns) for
/// every workload process before dropping its capabilities, and for the caller resolution
/// (``CallerResolver``), whose NETLINK_SOCK_DIAG socket was opened in the namespace by the same thread.
struct PrivateNetwork: Sendable {
  /// `/proc/<pid>/task/<tid>/ns/net` of the parked thread.
  let namespacePath: String
  /// The proxy's listening socket (bound to 127.0.0.1:`port` inside the namespace).
  let listenSocket: Int32
  /// The sock_diag socket inside the namespace, or why there is none.
  let diag: Result<SocketDiag, CallerResolver.ResolveError>
  /// The address workloads use (`127.0.0.1:3128`).
  let proxyAddress: String

  struct Failure: Error, CustomStringConvertible {
    let description: String
  }

  /// Creates the namespace and the proxy's socket in it.
  /// - Throws: ``Failure`` naming the step and errno (e.g. no CAP_SYS_ADMIN in the user namespace, or
  ///   a kernel without unprivileged user/network namespaces): the supervisor then exits, and the
  ///   sandbox never runs with an open network.
  static func create(port: UInt16 = SandboxProtocol.proxyPort) throws -> PrivateNetwork {
    var listen: Int32 = -1
    var diag: Int32 = -1
    var tid: Int32 = 0
    let r = csockdiag_private_netns(port, &listen, &diag, &tid)
    guard r == 0 else {
      throw Failure(
        description:
          "cannot create the sandbox's private network namespace (unshare CLONE_NEWNET, lo up, bind 127.0.0.1:\(port)): \(String(cString: strerror(-r)))")
    }
    let d: Result<SocketDiag, CallerResolver.ResolveError> =
      diag >= 0
      ? .success(SocketDiag(descriptor: diag))
      : .failure(CallerResolver.ResolveError(message: "no NETLINK_SOCK_DIAG socket in the private namespace: \(String(cString: strerror(-diag)))"))
    return PrivateNetwork(namespacePath: "/proc/\(getpid())/task/\(tid)/ns/net", listenSocket: listen, diag: d, proxyAddress: "127.0.0.1:\(port)")
  }
}
