import Crypto
import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// Network confinement of local sandboxes (issue 10; OpenShell: enforcement-and-ssh.md §1.4, rows
/// "Network namespace" and "Proxy").
///
/// ## Why a veth pair and nftables (and only as root)
/// Each sandbox gets a named network namespace `openshell-<sandbox id>-<gateway tag>` (iproute2 `ip netns`;
/// the tag, ``gatewayTag(sandboxesDirectory:)``, tells apart two gateways that serve the same sandbox ids,
/// e.g. a copied or restored data directory, so neither ever removes the other's namespace), a veth
/// pair `osh<N>h` (host side, `10.200.x.y+1/30`) / `osh<N>s` (sandbox side, `+2/30`, default route via
/// the host side) from a per-sandbox /30 of `10.200.0.0/16` (N = 0..<16384), `lo` up, and an nftables
/// table `inet openshell` whose `output` chain accepts only `lo`, the sandbox's proxy
/// (`<host side>:3128`) and established/related traffic, and rejects everything else at once: TCP with a
/// reset, the rest (UDP, ICMP, IPv6) with an ICMP(v6) administratively-prohibited error, so a direct
/// connection fails immediately (curl exit 7) instead of hanging. This is OpenShell's own mechanism
/// (`netns/mod.rs`, `nft_ruleset.rs`), and keeps the supervisor (and so the proxy) on the host side where
/// the agent cannot reach, kill or reconfigure it. The gateway sets it up in-process
/// (``NetworkNamespace``: rtnetlink through libmnl, the ruleset through libnftables) with the result
/// `ip netns add`, `ip link add`, `ip addr`, `ip route` and `nft -f` would give, without starting them
/// (issue 14). Creating namespaces and veth pairs needs CAP_NET_ADMIN/CAP_SYS_ADMIN in the host namespace.
///
/// ## Without root: a private namespace made by the supervisor
/// A gateway that is not root uses the second mechanism the issue names: an unshared network namespace
/// inside bubblewrap's (unprivileged) user namespace. The supervisor, given CAP_SYS_ADMIN/NET_ADMIN of
/// that user namespace only (``BubblewrapCommand/privateNetworkCapabilities``), creates it at start
/// with only `lo` and binds the proxy's socket to `127.0.0.1:3128` inside it (Supervisor
/// `PrivateNetwork`); nothing here runs per sandbox. No route leaves that namespace, so every direct
/// connection fails at once (ENETUNREACH, or ECONNREFUSED on its own empty loopback). Where the host
/// refuses unprivileged user or network namespaces (``privateNamespaceProblem``), ``LocalComputeDriver``
/// fails the sandbox with `NetworkConfinementUnavailable` saying so — never a silently open network.
///
/// Lifecycle: set up before bwrap starts (after the sandbox's start was recorded), torn down when the
/// sandbox stops, is deleted or turns out to be an orphan (the driver's start-up sweep covers every
/// sandbox directory of the gateway; several gateways may share a host, so a namespace is only ever
/// removed by the gateway that owns the sandbox).
/// The claimed index is kept in `<sandbox dir>/network.json`; a restart tries the same one first.
final class SandboxNetworks: Sendable {
  /// Namespace name prefix (`ip netns list`).
  static let prefix = "openshell-"
  /// Number of /30 subnets in 10.200.0.0/16.
  static let capacity = 16384
  /// MTU of both ends of the veth pair: the largest veth allows, as loopback's. The pair only carries the
  /// sandbox's connections to its proxy (which ends them), never traffic to the outside, so no path MTU
  /// is affected; with 1500 a bulk transfer through the proxy cost about a third of its rate in
  /// per-packet work (measured: ~0.9 GB/s over the pair at 1500, ~1.2–1.4 GB/s at 65535, host loopback ~1.4).
  static let mtu: UInt32 = 65535

  /// One sandbox's allocation.
  struct Allocation: Codable, Equatable, Sendable {
    var index: Int
    /// Host-side address (the proxy listens here), e.g. `10.200.0.1`.
    var hostAddress: String { Self.address(index, 1) }
    /// Sandbox-side address, e.g. `10.200.0.2`.
    var sandboxAddress: String { Self.address(index, 2) }
    var hostInterface: String { "osh\(index)h" }
    var sandboxInterface: String { "osh\(index)s" }
    static func address(_ index: Int, _ offset: Int) -> String {
      let base = index * 4
      return "10.200.\(base / 256).\(base % 256 + offset)"
    }
  }

  let root: String
  /// This gateway's part of its namespace names (``gatewayTag(sandboxesDirectory:)``).
  let tag: String

  init(sandboxesDirectory: String) {
    root = sandboxesDirectory
    tag = Self.gatewayTag(sandboxesDirectory: sandboxesDirectory)
  }

  /// 12 hex digits of the SHA-256 of the canonical path (symbolic links resolved) of a gateway's
  /// sandboxes directory: the same for every start of one data directory, different for a copy of it.
  static func gatewayTag(sandboxesDirectory: String) -> String {
    let canonical =
      realpath(sandboxesDirectory, nil).map { p in
        defer { free(p) }
        return String(cString: p)
      } ?? URL(fileURLWithPath: sandboxesDirectory).standardizedFileURL.path
    return SHA256.hash(data: Data(canonical.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
  }

  /// The sandbox's namespace name, `openshell-<id>-<tag>` (59 characters for a UUID id).
  func namespaceName(_ id: String) -> String { Self.prefix + id + "-" + tag }
  /// The sandbox's namespace file (what bwrap's launcher enters).
  func namespaceFile(_ id: String) -> String { NetworkNamespace.directory + "/" + namespaceName(id) }
  /// The name a gateway before the tag gave the namespace (`openshell-<id>`): removed only when no process
  /// is in it (``removeLegacyLocked(_:)``), since another gateway serving the same id may own it.
  static func legacyName(_ id: String) -> String { prefix + id }

  /// Why this host cannot confine sandboxes, nil when it can. A gateway that is not root needs a private
  /// namespace made by the supervisor (``privateNamespaceProblem``). A root gateway needs no tool: it sets up
  /// the veth pair and loads the nftables ruleset itself (libmnl, libnftables); a kernel without nf_tables
  /// (or veth) fails that set-up, and so the sandbox's start, with the reason — never an open network.
  static func unavailable(runAsRoot: Bool) -> String? {
    runAsRoot ? nil : privateNamespaceProblem
  }

  /// Why a gateway without root cannot give a sandbox a private network namespace, nil when it can.
  /// Probed once per process by doing what the supervisor does: bubblewrap with an unprivileged user
  /// namespace and ``BubblewrapCommand/privateNetworkCapabilities``, and in it `unshare --net`.
  static let privateNamespaceProblem: String? = {
    let args =
      ["--unshare-user", "--unshare-pid", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
      + BubblewrapCommand.privateNetworkCapabilities.flatMap { ["--cap-add", $0] } + ["--", "/usr/bin/unshare", "--net", "/bin/true"]
    do {
      try run("/usr/bin/bwrap", args)
      return nil
    } catch {
      return
        "network confinement without root needs an unprivileged user namespace with its own network namespace, which this host refuses (\(error)); run the gateway as root (veth pair + nftables) or allow them (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces and user.max_net_namespaces > 0); a sandbox never runs with an open network"
    }
  }()

  /// Creates the namespace, claims a subnet, and sets up the veth pair, addresses, route and nftables
  /// ruleset (after removing any leftover namespace of a previous start).
  ///
  /// Subnet claim, host-wide (several gateways may share a host): index N is taken by creating the
  /// host-side interface `osh<N>h`, which the kernel refuses when it exists, so two starts never share
  /// an index; the search starts at the previously recorded index, else at a hash of the sandbox id.
  /// - Returns: the allocation (also recorded in `<sandbox dir>/network.json`).
  /// - Parameter ruleset: the nftables ruleset for an allocation (tests give a broken one for the failure path).
  /// - Throws: `SpawnError` naming the step that failed and why (errno text or libnftables' message), or when
  ///   every subnet is taken. Then nothing of the namespace is left (the veth pair goes with it).
  func setUp(_ id: String, ruleset: (Allocation) -> String = SandboxNetworks.ruleset) throws -> Allocation {
    try Self.exclusively { try setUpLocked(id, ruleset: ruleset) }
  }

  private func setUpLocked(_ id: String, ruleset: (Allocation) -> String) throws -> Allocation {
    removeNamespaceLocked(id)
    let ns = namespaceName(id)
    let record = "\(root)/\(id)/network.json"
    let previous = FileManager.default.contents(atPath: record).flatMap { try? JSONDecoder().decode(Allocation.self, from: $0) }
    let start = previous?.index ?? Int(id.utf8.reduce(UInt32(2_166_136_261)) { ($0 ^ UInt32($1)) &* 16_777_619 } % UInt32(Self.capacity))
    let namespace: NetworkNamespace
    do { namespace = try NetworkNamespace(creating: ns) } catch { throw SpawnError("cannot create the network namespace \(ns): \(error)") }
    // Closed before any removal: its descriptors hold the namespace (and so the veth pair) alive.
    defer { namespace.close() }
    do {
      var claimed: Allocation?
      for offset in 0..<Self.capacity {
        let a = Allocation(index: (start + offset) % Self.capacity)
        let code = namespace.addVeth(host: a.hostInterface, peer: a.sandboxInterface, mtu: Self.mtu)
        if code == EEXIST { continue }
        guard code == 0 else {
          throw SpawnError("cannot add the veth pair \(a.hostInterface)/\(a.sandboxInterface): \(String(cString: strerror(code)))")
        }
        claimed = a
        break
      }
      guard let a = claimed else { throw SpawnError("no free sandbox subnet in 10.200.0.0/16 (all \(Self.capacity) are in use)") }
      // A hint for the next start (a torn file only means another search), so neither renamed nor flushed:
      // Foundation's `Data.write` fsyncs: a disk flush inside the host-wide lock, which every other sandbox's
      // namespace set-up and teardown waits for.
      try FileWriting.write(record, JSONEncoder().encode(a), mode: 0o644)
      do {
        try namespace.configure(
          host: a.hostInterface, peer: a.sandboxInterface, hostAddress: a.hostAddress, sandboxAddress: a.sandboxAddress, prefix: 30)
      } catch { throw SpawnError("cannot configure the veth pair \(a.hostInterface)/\(a.sandboxInterface): \(error)") }
      // The ruleset as loaded, for whoever inspects the sandbox directory (not read back).
      let rules = ruleset(a)
      let rulesFile = "\(root)/\(id)/nftables.conf"
      do { try FileWriting.write(rulesFile, rules, mode: 0o600) } catch { throw SpawnError("\(error)") }
      do { try namespace.loadRuleset(rules) } catch { throw SpawnError("cannot load the nftables ruleset into \(ns): \(error)") }
      return a
    } catch {
      namespace.close()
      removeNamespaceLocked(id)
      throw error
    }
  }

  /// The sandbox namespace's nftables ruleset (output only: nothing leaves but to the proxy).
  static func ruleset(_ a: Allocation) -> String {
    """
    table inet openshell {
      chain output {
        type filter hook output priority filter; policy drop;
        oifname "lo" accept
        ip daddr \(a.hostAddress) tcp dport \(SandboxProtocol.proxyPort) accept
        ct state established,related accept
        meta l4proto tcp reject with tcp reset
        reject with icmpx type admin-prohibited
      }
    }

    """
  }

  /// Removes the sandbox's namespace (idempotent). The veth pair goes with it: deleting the namespace's
  /// last reference (its processes are gone by then) destroys its end, and the kernel removes the peer.
  /// The host side is never deleted by name, since after a stop its index may belong to another sandbox.
  /// A namespace of the same sandbox under the name of a gateway before the tag goes too when nothing
  /// runs in it (``legacyName(_:)``).
  func tearDown(_ id: String) {
    guard hasNamespace(id) else { return }
    try? Self.exclusively { removeNamespaceLocked(id) }
  }

  /// ``tearDown(_:)`` on a thread of its own: it waits for the host-wide lock (``exclusively(_:)``) behind
  /// other sandboxes' set-ups, which must not hold one of the cooperative pool's few threads (with 20 sandboxes
  /// starting and stopping at once, blocked pool threads stalled a stop for over 15 s in CI).
  func tearDownOffPool(_ id: String) async {
    guard hasNamespace(id) else { return }
    _ = try? await LocalComputeDriver.onOwnThread { [self] in try Self.exclusively { removeNamespaceLocked(id) } }
  }

  /// Whether a namespace of this sandbox (tagged or legacy name) is bound in `/run/netns`. Nothing else
  /// creates one for `id` meanwhile: its set-up runs on the sandbox's serial queue, like its teardown.
  func hasNamespace(_ id: String) -> Bool {
    [namespaceName(id), Self.legacyName(id)].contains {
      FileManager.default.fileExists(atPath: NetworkNamespace.directory + "/" + $0)
    }
  }

  private func removeNamespaceLocked(_ id: String) {
    NetworkNamespace.remove(namespaceName(id))
    Self.removeLegacyLocked(id)
  }

  /// Removes `openshell-<id>` (the untagged name) when it exists and no process is in it: then it is a
  /// leftover (its sandbox's processes are gone when this runs); with processes in it, it belongs to a
  /// sandbox another gateway runs and is left alone.
  static func removeLegacyLocked(_ id: String) {
    let file = NetworkNamespace.directory + "/" + legacyName(id)
    guard FileManager.default.fileExists(atPath: file), processes(inNamespace: file).isEmpty else { return }
    NetworkNamespace.remove(legacyName(id))
  }

  /// The pids of the processes whose network namespace is the one bound at `file` (compared by device
  /// and inode of `/proc/<pid>/ns/net`, as `ip netns pids` does).
  static func processes(inNamespace file: String) -> [Int32] {
    var target = stat()
    guard stat(file, &target) == 0 else { return [] }
    var found: [Int32] = []
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
      guard let pid = Int32(entry) else { continue }
      var st = stat()
      if stat("/proc/\(pid)/ns/net", &st) == 0, st.st_ino == target.st_ino, st.st_dev == target.st_dev { found.append(pid) }
    }
    return found
  }

  /// Host-wide lock file: concurrent namespace creations race while the shared `/run/netns` mount is
  /// prepared (a namespace file then reads "Invalid argument"), so every gateway on the host serializes
  /// its namespace setup and teardown with flock(2) on this file (each call opens it anew, so two threads
  /// of one gateway exclude each other too; libnftables is then never used by two threads at once).
  static let lockFile = "/run/openshell-netns.lock"

  static func exclusively<T>(_ body: () throws -> T) throws -> T {
    let fd = open(lockFile, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw SpawnError("cannot open \(lockFile): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    while flock(fd, LOCK_EX) != 0 {
      guard errno == EINTR else { throw SpawnError("cannot lock \(lockFile): \(String(cString: strerror(errno)))") }
    }
    return try body()
  }

  /// Runs a trusted system tool and waits; throws with its stderr when it fails.
  static func run(_ path: String, _ args: [String]) throws {
    let p = try Spawner.spawn(path, args, environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], stderr: .pipe)
    var err = Data()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
      let n = read(p.stderr!, &buf, buf.count)
      if n <= 0 { break }
      err.append(contentsOf: buf[0..<n])
    }
    close(p.stderr!)
    let status = Spawner.waitBlocking(p.pid)
    guard status == 0 else {
      let text = String(decoding: err, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
      throw SpawnError("\((path as NSString).lastPathComponent) \(args.joined(separator: " ")) failed (status \(status)): \(text)")
    }
  }
}
