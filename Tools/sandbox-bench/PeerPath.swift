import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// The network path of the peer relays in `--proxy` (``PeerRelays``): the benchmark sandbox's own, so a
/// peer is measured on exactly the path of the policy proxy — the sandbox's network namespace, its veth
/// pair (MTU 65535, the kernel's default offloads) and nftables output rules, and the same python3 client
/// inside bubblewrap with the workload's user, Landlock and seccomp. The relays listen on the veth's host
/// address (the proxy's), on their own ports; the sandbox's nftables output chain (table `inet openshell`,
/// made by the gateway's `SandboxNetworks`) admits only the proxy's port there, so this opens the relays'
/// ports with one rule inserted at the chain's head, tagged with a comment. That rule is the only change
/// to the sandbox's confinement, made by this benchmark (root) for its own sandbox; ``tearDown()``
/// deletes it, and the sandbox's removal at the end of the run removes the namespace with it anyway.
///
/// Before 2026-12-07 the peers ran on a namespace and veth pair of the benchmark's own, with the client as
/// root through `ip netns exec`: HAProxy then looked faster than our tunnel, but on the sandbox's own path
/// with the same client it is level with it (the client in the sandbox costs more than the relay does).
final class PeerPath: @unchecked Sendable {
  static let ip = "/usr/sbin/ip"
  static let comment = "openshell-sandbox-bench peers"
  /// The sandbox's network namespace (`/run/netns/<name>`).
  let namespace: String
  /// Host-side veth address of the sandbox (the proxy's address; the relays listen here).
  let hostAddress: String
  private let lock = NSLock()
  private var handle: String?

  /// Opens `ports` of `hostAddress` to the sandbox whose namespace is `namespace`.
  /// - Throws: ``LauncherBench/BenchError`` naming the failed step and the tool's message; then nothing is left.
  init(namespace: String, hostAddress: String, ports: [Int]) throws {
    self.namespace = namespace
    self.hostAddress = hostAddress
    let rule = [
      "ip", "daddr", hostAddress, "tcp", "dport", "{", ports.map(String.init).joined(separator: ", "), "}", "accept", "comment", "\"\(Self.comment)\"",
    ]
    let nft = [Self.ip, "netns", "exec", namespace, "/usr/sbin/nft"]
    try Self.command(nft + ["insert", "rule", "inet", "openshell", "output"] + rule)
    // The rule's handle, to delete exactly it: `nft -a` prints "… comment "…" # handle N".
    let listing = try Self.command(nft + ["-a", "list", "chain", "inet", "openshell", "output"])
    let line = listing.split(separator: "\n").first { $0.contains(Self.comment) }
    handle = line.flatMap { $0.components(separatedBy: "# handle ").last }.map { $0.trimmingCharacters(in: .whitespaces) }
  }

  /// Deletes the rule again (idempotent; a sandbox already gone took it with its namespace).
  func tearDown() {
    guard
      let h = lock.withLock({ () -> String? in
        defer { handle = nil }; return handle
      })
    else { return }
    guard FileManager.default.fileExists(atPath: "/run/netns/\(namespace)") else { return }
    _ = try? Self.command([Self.ip, "netns", "exec", namespace, "/usr/sbin/nft", "delete", "rule", "inet", "openshell", "output", "handle", h])
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
