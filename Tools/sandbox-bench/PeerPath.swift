import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// The network path of the peer relays in `--proxy` (``PeerRelays``): a network namespace and veth pair
/// of the benchmark's own, built like a sandbox's (the gateway's `SandboxNetworks`): both veth ends with
/// MTU 65535, the kernel's default veth offloads (the product sets none: TSO/GSO/SG/checksum on, GRO
/// off), a /30 with the host side as the namespace's default route, `lo` up, and the same nftables
/// output ruleset (only the relays' ports on the host side, established traffic, the rest rejected), so
/// the namespace's connection tracking is on the path too. What differs: the client runs as root through
/// `ip netns exec` (no bubblewrap, no seccomp), and the relays listen on other ports than the proxy's.
///
/// Names cannot collide with a gateway's (`openshell-<id>-<tag>`, `osh<N>h`/`osh<N>s`, 10.200.0.0/16):
/// namespace `oshbench-peer-<pid>`, interfaces `obp<pid>h`/`obp<pid>s`, a /30 in 10.199.0.0/16 chosen by
/// the pid. ``tearDown()`` removes all of it (idempotent); it runs on every exit path of the benchmark,
/// also on SIGINT/SIGTERM (``PeerRelays``), and a later run removes namespaces left by a killed one.
final class PeerPath: @unchecked Sendable {
  /// MTU of both veth ends: `SandboxNetworks.mtu` of the product.
  static let mtu = 65535
  static let prefix = "oshbench-peer-"
  static let ip = "/usr/sbin/ip"
  let namespace: String
  let hostInterface: String
  let sandboxInterface: String
  /// Host-side address (the relays listen here) and the namespace side's.
  let hostAddress: String
  let sandboxAddress: String
  private let lock = NSLock()
  private var up = false

  /// Builds the path for relays listening on `ports` of the host side.
  /// - Throws: ``LauncherBench/BenchError`` naming the failed step and the tool's message; then nothing is left.
  init(ports: [Int]) throws {
    let pid = Int(getpid())
    namespace = Self.prefix + String(pid)
    hostInterface = "obp\(pid)h"
    sandboxInterface = "obp\(pid)s"
    let base = (pid % 16384) * 4
    hostAddress = "10.199.\(base / 256).\(base % 256 + 1)"
    sandboxAddress = "10.199.\(base / 256).\(base % 256 + 2)"
    Self.removeStale()
    lock.withLock { up = true }
    do {
      let ns = namespace
      try Self.command([Self.ip, "netns", "add", ns])
      try Self.command([
        Self.ip, "link", "add", hostInterface, "mtu", "\(Self.mtu)", "type", "veth", "peer", "name", sandboxInterface, "mtu", "\(Self.mtu)", "netns", ns,
      ])
      try Self.command([Self.ip, "addr", "add", "\(hostAddress)/30", "dev", hostInterface])
      try Self.command([Self.ip, "link", "set", hostInterface, "up"])
      try Self.command([Self.ip, "-n", ns, "addr", "add", "\(sandboxAddress)/30", "dev", sandboxInterface])
      try Self.command([Self.ip, "-n", ns, "link", "set", sandboxInterface, "up"])
      try Self.command([Self.ip, "-n", ns, "link", "set", "lo", "up"])
      try Self.command([Self.ip, "-n", ns, "route", "add", "default", "via", hostAddress])
      let ruleset = """
        table inet openshell {
          chain output {
            type filter hook output priority filter; policy drop;
            oifname "lo" accept
            ip daddr \(hostAddress) tcp dport { \(ports.map(String.init).joined(separator: ", ")) } accept
            ct state established,related accept
            meta l4proto tcp reject with tcp reset
            reject with icmpx type admin-prohibited
          }
        }

        """
      try Self.command([Self.ip, "netns", "exec", ns, "/usr/sbin/nft", "-f", "-"], input: ruleset)
    } catch {
      tearDown()
      throw error
    }
  }

  /// `argv` run inside the namespace (`ip netns exec`).
  func inside(_ argv: [String]) -> [String] { [Self.ip, "netns", "exec", namespace] + argv }

  /// Removes the namespace (its veth end goes with it, and the kernel removes the peer) and the host-side
  /// interface should the namespace's removal have failed. Idempotent.
  func tearDown() {
    guard
      lock.withLock({ () -> Bool in
        defer { up = false }; return up
      })
    else { return }
    try? Self.command([Self.ip, "netns", "del", namespace])
    if FileManager.default.fileExists(atPath: "/sys/class/net/\(hostInterface)") { try? Self.command([Self.ip, "link", "del", hostInterface]) }
  }

  /// Removes the namespaces of earlier runs whose process is gone (a run killed with SIGKILL cannot clean up).
  static func removeStale() {
    for name in (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [] where name.hasPrefix(prefix) {
      guard let pid = Int32(name.dropFirst(prefix.count)), kill(pid, 0) != 0, errno == ESRCH else { continue }
      try? command([Self.ip, "netns", "del", name])
    }
  }

  /// Runs `argv` (`argv[0]` an absolute path; PATH /usr/sbin:/usr/bin:/sbin:/bin for what it starts) with
  /// `input` on stdin; returns its stdout and stderr, interleaved.
  /// - Throws: ``LauncherBench/BenchError`` with the command and its output when it does not exit 0.
  @discardableResult static func command(_ argv: [String], input: String? = nil) throws -> String {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw LauncherBench.BenchError("pipe: \(String(cString: strerror(errno)))") }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    let env = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
    let p: SpawnedProcess
    do {
      p = try Spawner.spawn(argv[0], Array(argv.dropFirst()), environment: env, stdin: input == nil ? .null : .pipe, stdout: .fd(fds[1]), stderr: .fd(fds[1]))
    } catch {
      close(fds[0]); close(fds[1])
      throw error
    }
    close(fds[1])
    if let fd = p.stdin {
      let bytes = Array((input ?? "").utf8)
      _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
      close(fd)
    }
    var out = Data()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
      let n = read(fds[0], &buf, buf.count)
      if n <= 0 { break }
      out.append(contentsOf: buf[0..<n])
    }
    close(fds[0])
    let code = Spawner.waitBlocking(p.pid)
    let text = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    guard code == 0 else { throw LauncherBench.BenchError("`\(argv.joined(separator: " "))` exited \(code): \(text)") }
    return text
  }
}
