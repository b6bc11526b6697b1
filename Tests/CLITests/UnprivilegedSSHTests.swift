import Foundation
import SandboxProtocol
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Issue 11 with a gateway that is not root (a local gateway of an ordinary user, a remote gateway installed as
/// a user): the real OpenSSH client through `openshell sandbox ssh-config`, `scp` and `sandbox connect` on a
/// pseudo-terminal log in as the user `whoami` names inside the sandbox, and from inside that session the
/// confinement holds (no capabilities, no_new_privs, seccomp, Landlock, the sandbox's own network namespace).
/// Before the fix every login was refused: sshd did not know the user `sandbox`, and its
/// `AuthorizedKeysCommand` was refused as not root-owned in bubblewrap's user namespace.
@Suite("Unprivileged SSH logins", .serialized, .timeLimit(.minutes(10)))
struct UnprivilegedSSHTests {
  typealias Nobody = UnprivilegedNetworkTests

  /// Runs `binary ARGS` as nobody (setpriv) with HOME in the environment's root.
  static func asNobody(_ env: CLIEnv, binary: String, _ args: [String]) throws -> CLIEnv.Result {
    try env.run(
      ["--reuid", "\(Nobody.nobody)", "--regid", "\(Nobody.nobody)", "--clear-groups", "--", binary] + args,
      // TMPDIR: the suite's own directory (nobody's), not the runner's, which nobody may not write to
      // (scripts/test.sh makes it 0711); `sandbox connect` keeps a private directory there.
      binary: "/usr/bin/setpriv", env: ["HOME": env.root.path, "TMPDIR": env.root.path])
  }

  /// Stops the gateway `name` (as nobody), then waits up to 10 s until no process whose command line names
  /// the environment's state directory is left (the gateway; bwrap, which names the sandbox's workspace), no
  /// process carries one of its sandboxes' ids in its environment (the supervisor, workloads) and no network namespace of its
  /// sandboxes exists; records an issue for whatever remains. Used in `defer` on every path.
  static func stopAndExpectNothingLeft(_ env: CLIEnv, gateway name: String) {
    let sandboxes = env.dataDir(name).appendingPathComponent("sandboxes").path
    let ids = (try? FileManager.default.contentsOfDirectory(atPath: sandboxes)) ?? []
    _ = try? Nobody.asNobody(env, ["gateway", "stop", "--name", name])
    var left = ""
    var namespaces: [String] = []
    for _ in 0..<100 {
      left = (try? env.run(["-a", "-f", env.state.path], binary: "/usr/bin/pgrep").out) ?? ""
      let netns = (try? env.run(["netns", "list"], binary: "/usr/sbin/ip").out) ?? ""
      namespaces = ids.filter { netns.contains("openshell-\($0)") }
      left += Self.processes(withSandboxIDs: ids).map { "pid \($0.0): \($0.1)\n" }.joined()
      if left.isEmpty && namespaces.isEmpty { break }
      usleep(100_000)
    }
    #expect(left.isEmpty, "processes of the test's gateway \(name) left running:\n\(left)")
    #expect(namespaces.isEmpty, "network namespaces left: \(namespaces)")
  }

  /// Processes whose environment holds `OPENSHELL_SANDBOX_ID=<one of ids>`: (pid, command line).
  static func processes(withSandboxIDs ids: [String]) -> [(Int32, String)] {
    guard !ids.isEmpty else { return [] }
    let marks = ids.map { Data("\(SandboxProtocol.envSandboxID)=\($0)\0".utf8) }
    var found: [(Int32, String)] = []
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
      guard let pid = Int32(entry), let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ") else { continue }
      guard marks.contains(where: { environ.range(of: $0) != nil }) else { continue }
      let cmdline = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") ?? Data()
      found.append((pid, String(decoding: cmdline.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)))
    }
    return found
  }

  @Test("gateway as nobody: ssh/scp through ssh-config and connect on a pty log in as the sandbox user, confined as any workload")
  func sshIntoUnprivilegedSandbox() throws {
    let env = try CLIEnv("unpriv-ssh")
    defer { env.cleanup() }
    for d in [env.root.path, env.config.path, env.state.path] { #expect(chown(d, Nobody.nobody, Nobody.nobody) == 0) }
    let upDir = env.root.appendingPathComponent("up").path
    try FileManager.default.createDirectory(atPath: upDir, withIntermediateDirectories: true)
    let (upPID, up) = try Nobody.upstream(upDir)
    defer {
      kill(upPID, SIGKILL)
      _ = Spawner.waitBlocking(upPID)
    }
    let port = freePort()
    var r = try Nobody.asNobody(env, ["gateway", "start", "--name", "upssh", "--port", "\(port)"])
    defer { Self.stopAndExpectNothingLeft(env, gateway: "upssh") }
    try #require(r.code == 0, "\(r)")
    r = try Nobody.asNobody(env, ["sandbox", "create", "box"])
    defer { _ = try? Nobody.asNobody(env, ["sandbox", "delete", "box"]) }
    try #require(r.code == 0, "\(r)")

    // The leftover check below sees a running sandbox (so it can fail): its supervisor carries the id.
    let ids = (try? FileManager.default.contentsOfDirectory(atPath: env.dataDir("upssh").appendingPathComponent("sandboxes").path)) ?? []
    #expect(ids.count == 1 && Self.processes(withSandboxIDs: ids).contains { $0.1.hasPrefix("/opt/openshell/bin/openshell-sandbox") }, "\(ids)")

    // The name the workload sees is the one it logs in as.
    r = try Nobody.asNobody(env, ["sandbox", "exec", "box", "--", "sh", "-c", "whoami; id -u; echo $USER"])
    #expect(r.code == 0 && r.out == "sandbox\n\(Nobody.nobody)\nsandbox\n", "\(r)")

    r = try Nobody.asNobody(env, ["sandbox", "ssh-config", "box"])
    try #require(r.code == 0 && r.out.contains("User sandbox"), "\(r)")
    let config = env.root.appendingPathComponent("ssh_config").path
    try r.out.write(toFile: config, atomically: true, encoding: .utf8)
    _ = chmod(config, 0o644)
    let host = "openshell-box.default"
    func ssh(_ command: String) throws -> CLIEnv.Result { try Self.asNobody(env, binary: "/usr/bin/ssh", ["-F", config, host, command]) }

    // The real OpenSSH client through ssh-config: user, uid, home.
    r = try ssh("id -un; id -u; echo $HOME")
    #expect(r.code == 0 && r.out == "sandbox\n\(Nobody.nobody)\n/sandbox\n", "\(r)")

    // scp a few MiB up and back: the same bytes.
    let local = env.root.appendingPathComponent("payload.bin").path
    var bytes = [UInt8](repeating: 0, count: 4 << 20)
    for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
    FileManager.default.createFile(atPath: local, contents: Data(bytes), attributes: [.posixPermissions: 0o644])
    let digest = try SSHCLITests.sha256(env, local)
    r = try Self.asNobody(env, binary: "/usr/bin/scp", ["-F", config, local, "\(host):/sandbox/payload.bin"])
    #expect(r.code == 0, "\(r)")
    r = try ssh("sha256sum /sandbox/payload.bin; stat -c %U /sandbox/payload.bin")
    #expect(r.out == "\(digest)  /sandbox/payload.bin\nsandbox\n", "\(r)")
    let back = env.root.appendingPathComponent("back.bin").path
    r = try Self.asNobody(env, binary: "/usr/bin/scp", ["-F", config, "\(host):/sandbox/payload.bin", back])
    #expect(r.code == 0, "\(r)")
    #expect(try SSHCLITests.sha256(env, back) == digest)

    // sandbox connect on a pseudo-terminal: a shell with a tty, as the sandbox user, and its exit code.
    let script = env.root.appendingPathComponent("drive.py").path
    try SSHCLITests.ptyDriver.write(toFile: script, atomically: true, encoding: .utf8)
    _ = chmod(script, 0o644)
    r = try Self.asNobody(env, binary: "/usr/bin/python3", [script, CLIEnv.openshell, "box"])
    #expect(r.out.contains("marker-42") && r.out.contains("/dev/pts/") && r.out.contains("\nsandbox\r\n"), "\(r)")
    #expect(r.out.contains("EXIT 3"), "\(r)")

    // From inside the ssh session: no capabilities, no_new_privs, seccomp; the host's account files and the
    // gateway's data directory are not there; Landlock refuses the SSH host key and the supervisor's token
    // although their owner is the session's own uid; the host's loopback is not this loopback; the
    // supervisor (same uid) is out of reach.
    let dataDir = env.dataDir("upssh").path
    r = try ssh(
      """
      grep -E '^(NoNewPrivs|Seccomp|CapEff|CapPrm|CapBnd):' /proc/self/status
      for f in /etc/shadow \(dataDir)/log /run/openshell/ssh_host_ed25519_key /run/openshell/token; do
        if cat "$f" >/dev/null 2>/tmp/e; then echo "READ $f"; else echo "DENIED $f: $(cat /tmp/e)"; fi
      done
      stat -c 'key-owner %u' /run/openshell/ssh_host_ed25519_key
      python3 - <<'EOF'
      import os, socket
      s = socket.socket(); s.settimeout(5)
      try:
          s.connect(('127.0.0.1', \(up))); print('host-loopback CONNECTED')
      except OSError as e:
          print('host-loopback errno', e.errno)
      sup = [int(p) for p in os.listdir('/proc') if p.isdigit() and open('/proc/%s/cmdline' % p, 'rb').read().startswith(b'/opt/openshell/bin/openshell-sandbox')][0]
      try:
          os.kill(sup, 0); print('kill-supervisor ALLOWED')
      except OSError as e:
          print('kill-supervisor errno', e.errno)
      EOF
      """)
    #expect(r.out.contains("NoNewPrivs:\t1") && r.out.contains("Seccomp:\t2"), "\(r)")
    for cap in ["CapEff", "CapPrm", "CapBnd"] { #expect(r.out.contains("\(cap):\t0000000000000000"), "\(cap): \(r)") }
    #expect(r.out.contains("DENIED /etc/shadow: cat: /etc/shadow: No such file or directory"), "\(r)")
    #expect(r.out.contains("DENIED \(dataDir)/log: cat: \(dataDir)/log: No such file or directory"), "\(r)")
    #expect(r.out.contains("DENIED /run/openshell/ssh_host_ed25519_key: cat: /run/openshell/ssh_host_ed25519_key: Permission denied"), "\(r)")
    #expect(r.out.contains("DENIED /run/openshell/token: cat: /run/openshell/token: Permission denied"), "\(r)")
    #expect(r.out.contains("key-owner \(Nobody.nobody)"), "the key is the session uid's own: only Landlock refuses it: \(r)")
    #expect(r.out.contains("host-loopback errno 111"), "\(r)")
    #expect(r.out.contains("kill-supervisor errno 1"), "\(r)")
    #expect(!r.out.contains("READ ") && !r.out.contains("ALLOWED") && !r.out.contains("CONNECTED"), "\(r)")

    // A login as anyone else is refused (sshd runs as the sandbox user and allows only it).
    r = try Self.asNobody(env, binary: "/usr/bin/ssh", ["-F", config, "-o", "BatchMode=yes", "-l", "root", host, "id"])
    #expect(r.code == 255 && r.err.contains("Permission denied"), "\(r)")
    // No other method (a password prompt) is offered to another login name.
    #expect(r.err.contains("Permission denied ()."), "\(r)")

    // Logins leave no warnings in the sandbox's log (sshd's shadow lookup is expected noise).
    r = try Nobody.asNobody(env, ["logs", "box", "-n", "500"])
    #expect(r.out.contains("ssh session") && !r.out.contains("shadow"), "\(r)")
  }
}
