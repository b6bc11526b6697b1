import CNetSetup
import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// A named network namespace under `/run/netns` set up in-process (issue 14: the five `ip`/`nft` processes
/// that did this were ~21 ms of create → READY): the steps of `ip netns add`, `ip link add … type veth peer …
/// netns`, `ip addr add`, `ip link set … up`, `ip route add default via` and `nft -f`, done with rtnetlink
/// (Debian's libmnl) and libnftables by `Sources/CNetSetup`. The result is what those commands make: the
/// same bind-mounted file (so `ip netns` and `ip netns exec` see it), interfaces, addresses, route and ruleset.
///
/// No thread of the Swift runtime or of NIO ever changes its network namespace: the namespace is made, and
/// its ruleset loaded, by threads that CNetSetup creates for that and that end afterwards.
/// The caller serializes (``SandboxNetworks/exclusively(_:)``); one instance is used by one thread at a time.
final class NetworkNamespace {
  /// iproute2's directory of named namespaces.
  static let directory = "/run/netns"

  let name: String
  private var handle: OpaquePointer?

  /// Creates the namespace `/run/netns/<name>` as `ip netns add` does. Nothing is left behind on failure.
  /// - Throws: `SpawnError` with the failed step and its errno text (an existing file is an error).
  init(creating name: String) throws(SpawnError) {
    self.name = name
    var err = [CChar](repeating: 0, count: 1024)
    guard let h = cnetsetup_netns_create(Self.directory, name, &err, err.count) else { throw SpawnError(Self.text(err)) }
    handle = h
  }

  deinit { close() }

  /// Creates the veth pair `host` (this namespace's caller side) / `peer` (in the namespace), both with `mtu`.
  /// - Returns: 0, or the errno: `EEXIST` when an interface named `host` exists (the index is taken).
  func addVeth(host: String, peer: String, mtu: UInt32) -> Int32 {
    guard let handle else { return EBADF }
    return -cnetsetup_veth_add(handle, host, peer, mtu)
  }

  /// Host side: `hostAddress`/`prefix` on `host`, `host` up. Namespace: `lo` up, `sandboxAddress`/`prefix` on
  /// `peer`, `peer` up, the default route via `hostAddress`.
  /// - Throws: `SpawnError` naming the failed step, e.g. "add 10.200.0.1/30 to osh0h: File exists".
  func configure(host: String, peer: String, hostAddress: String, sandboxAddress: String, prefix: UInt32) throws(SpawnError) {
    guard let handle else { throw SpawnError("the namespace \(name) is closed") }
    var err = [CChar](repeating: 0, count: 1024)
    guard cnetsetup_configure(handle, host, peer, hostAddress, sandboxAddress, prefix, &err, err.count) == 0 else {
      throw SpawnError(Self.text(err))
    }
  }

  /// Loads an nftables ruleset (the text `nft -f` reads) into the namespace with libnftables.
  /// - Throws: `SpawnError` with libnftables' error text (e.g. no nf_tables support in the kernel).
  func loadRuleset(_ ruleset: String) throws(SpawnError) {
    guard let handle else { throw SpawnError("the namespace \(name) is closed") }
    var err = [CChar](repeating: 0, count: 4096)
    guard cnetsetup_nft_load(handle, ruleset, &err, err.count) == 0 else { throw SpawnError(Self.text(err)) }
  }

  /// Drops this process's references to the namespace (descriptors and netlink sockets); it stays until
  /// ``remove(_:)``. Idempotent.
  func close() {
    if let handle { cnetsetup_netns_close(handle) }
    handle = nil
  }

  /// What `ip netns del <name>` does: unmounts (lazily) and unlinks `/run/netns/<name>`; the kernel then
  /// destroys the namespace, and the veth pair with it, once no process is in it (asynchronously).
  /// - Returns: 0, or the errno of the unlink (`ENOENT`: there was none).
  @discardableResult
  static func remove(_ name: String) -> Int32 { -cnetsetup_netns_remove(directory + "/" + name) }

  /// CNetSetup's message as one line: libnftables' may span several (the rule, then a line of carets
  /// under the failing part, dropped here), joined with "; ".
  private static func text(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
      .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
      .filter { !$0.isEmpty && !$0.allSatisfy { "^~".contains($0) } }.joined(separator: "; ")
  }
}
