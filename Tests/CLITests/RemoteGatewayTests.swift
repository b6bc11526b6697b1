import Foundation
import SandboxProtocol
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// `gateway start --remote` against a real sshd in a network namespace (``SSHHostFixture``), as an
/// unprivileged user: install, start, registration, certificates, CLI and SDK use, doctor, stop/start
/// with state kept, --recreate, destroy, the tunnel (explicit and as fallback) and the failures
/// (wrong key, refused and unreachable host, port taken on the host).
@Suite("Remote gateway over SSH", .serialized)
struct RemoteGatewayTests {
  static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

  func cli(_ host: SSHHostFixture, _ label: String) throws -> CLIEnv {
    var env = try CLIEnv(label)
    env.extraEnv["OPENSHELL_SSH_CONFIG"] = host.sshConfig
    env.extraEnv["SSH_AUTH_SOCK"] = ""
    return env
  }

  @Test("errors name the failing step and register nothing: wrong key, refused, unreachable, host key, permission, health timeout, port taken")
  func failures() async throws {
    guard let host = try SSHHostFixture.make() else { return }
    defer { host.destroy() }
    let env = try cli(host, "rfail")
    defer { env.cleanup() }

    var r = try env.run(["gateway", "start", "--remote", "\(host.user)@\(host.address)", "--ssh-key", host.wrongKey, "--name", "wrongkey"])
    #expect(r.code != 0 && r.err.contains("step 'ssh authentication' failed") && r.err.contains("--ssh-key"), "\(r)")
    #expect(r.err.split(separator: "\n").count == 1, "\(r)")
    #expect(env.metadata("wrongkey") == nil)

    r = try env.run(["gateway", "start", "--remote", "\(host.user)@\(host.address)", "--ssh-key", "/nonexistent/key", "--name", "nokey"])
    #expect(r.code != 0 && r.err.contains("--ssh-key /nonexistent/key"), "\(r)")

    r = try env.run(["gateway", "start", "--remote", "ssh://\(host.user)@\(host.address):2222", "--ssh-key", host.userKey, "--name", "refused"])
    #expect(r.code != 0 && r.err.contains("step 'ssh connection' failed") && r.err.contains("Connection refused"), "\(r)")
    #expect(env.metadata("refused") == nil)

    r = try env.run(["gateway", "start", "--remote", "\(host.user)@\(host.unreachable)", "--ssh-key", host.userKey, "--name", "unreach"])
    #expect(r.code != 0 && r.err.contains("step 'ssh connection' failed") && r.err.contains("unreachable"), "\(r)")
    #expect(r.seconds < 30, "\(r)")
    #expect(env.metadata("unreach") == nil)

    // An unknown host key is never accepted: named, with the command that verifies it.
    let strict = host.dir + "/ssh_config_strict"
    try "Host *\n  UserKnownHostsFile \(host.dir)/empty_known_hosts\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
      .write(toFile: strict, atomically: true, encoding: .utf8)
    r = try env.run(
      ["gateway", "start", "--remote", "\(host.user)@\(host.address)", "--ssh-key", host.userKey, "--name", "hostkey"],
      env: ["OPENSHELL_SSH_CONFIG": strict])
    #expect(r.code != 0 && r.err.contains("step 'ssh host key' failed") && r.err.contains("ssh \(host.user)@\(host.address) true"), "\(r)")
    #expect(env.metadata("hostkey") == nil)

    // No write permission where the binaries go (a root-owned directory in the user's home).
    try SSHHostFixture.sh(
      "install -d -o \(host.user) -g \(host.user) \(host.home)/.local \(host.home)/.local/share && install -d -o root -m 755 \(host.home)/.local/share/openshell"
    )
    r = try env.run(["gateway", "start", "--remote", SSHHostFixture.alias, "--name", "perm"])
    #expect(
      r.code != 0 && r.err.contains("step 'install binaries' failed") && r.err.contains("needs write permission in \(host.home)/.local/share/openshell/remote"),
      "\(r)")
    #expect(env.metadata("perm") == nil)
    try SSHHostFixture.sh("rm -rf \(host.home)/.local/share/openshell")

    // The gateway does not become healthy in time: named, nothing registered, nothing left running.
    r = try env.run(["gateway", "start", "--remote", SSHHostFixture.alias, "--name", "slow", "--port", "\(freePort())", "--timeout", "0"])
    #expect(r.code != 0 && r.err.contains("step 'wait for health' failed") && r.err.contains("doctor logs --name slow"), "\(r)")
    #expect(env.metadata("slow") == nil)
    #expect(!FileManager.default.fileExists(atPath: host.home + "/.local/state/openshell/gateways/slow/gateway.pid"))

    // A port taken on the host (by a listener in its namespace): named, with the fix, nothing registered.
    let port = freePort()
    let holder = try Spawner.spawn(
      "/usr/sbin/ip",
      ["netns", "exec", host.namespace, "python3", "-c", "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', \(port))); s.listen(); time.sleep(600)"],
      environment: ["PATH": "/usr/bin:/bin"])
    defer { kill(holder.pid, SIGKILL); _ = Spawner.waitBlocking(holder.pid) }
    usleep(500_000)
    r = try env.run(["gateway", "start", "--remote", SSHHostFixture.alias, "--name", "taken", "--port", "\(port)"])
    #expect(r.code != 0 && r.err.contains("step 'port check' failed") && r.err.contains("port \(port) is already in use"), "\(r)")
    #expect(r.err.contains("--port"), "\(r)")
    #expect(env.metadata("taken") == nil)
  }

  @Test("start on the host, use it from the CLI and the SDK, doctor, stop/start keeps state, recreate, destroy")
  func lifecycle() async throws {
    guard let host = try SSHHostFixture.make() else { return }
    defer { host.destroy() }
    let env = try cli(host, "rlife")
    defer { env.cleanup() }
    let port = freePort()

    var r = try env.run(["gateway", "start", "--remote", SSHHostFixture.alias, "--name", "rgw", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    #expect(r.out.contains("Installing openshell"), "\(r)")
    let meta = try #require(env.metadata("rgw"))
    #expect(meta["is_remote"] as? Bool == true && meta["type"] as? String == "remote")
    #expect(meta["remote_host"] as? String == SSHHostFixture.alias)
    #expect(meta["resolved_host"] as? String == host.address)
    #expect(meta["gateway_endpoint"] as? String == "https://\(host.address):\(port)")
    #expect(meta["gateway_port"] as? Int == port)
    let ssh = try #require(meta["ssh"] as? [String: Any])
    let bin = try #require(ssh["openshell_path"] as? String)
    #expect(bin.hasPrefix(host.home + "/.local/share/openshell/remote/0.1.0+") && bin.hasSuffix("/bin/openshell"), "\(bin)")

    // Installed as the user, with the Swift runtime beside it (RUNPATH), not the toolchain's.
    let installDir = (bin as NSString).deletingLastPathComponent.replacingOccurrences(of: "/bin", with: "", options: .backwards)
    var st = stat()
    #expect(stat(bin, &st) == 0 && st.st_uid == host.userID)
    let ldd = try SSHHostFixture.sh("ldd \(bin)")
    #expect(ldd.contains("libswiftCore.so => \(installDir)/lib/libswiftCore.so"), "\(ldd)")

    // The daemon runs as the unprivileged SSH user, inside the host's network namespace.
    let pidFile = host.home + "/.local/state/openshell/gateways/rgw/gateway.pid"
    let pid = try #require(Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
    #expect(stat("/proc/\(pid)", &st) == 0 && st.st_uid == host.userID)
    #expect(host.inNamespace(pid))

    // Server certificate SANs: the resolved host and the SSH alias.
    let sans = try SSHHostFixture.sh(
      "openssl s_client -connect \(host.address):\(port) </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName")
    #expect(sans.contains("IP Address:\(host.address)") && sans.contains("DNS:\(SSHHostFixture.alias)"), "\(sans)")

    r = try env.run(["status"])
    #expect(r.code == 0 && r.out.contains("Connected") && r.out.contains(SSHHostFixture.alias) && r.out.contains(host.address), "\(r)")

    // Again: already running, nothing installed twice.
    r = try env.run(["gateway", "start", "--name", "rgw"])
    #expect(r.code == 0 && r.out.contains("is installed on the host") && r.out.contains("already running"), "\(r)")
    #expect(!r.out.contains("Installing"), "\(r)")

    // State that must survive stop/start.
    r = try env.run(["provider", "create", "--name", "keepme", "--type", "generic", "--credential", "TOKEN=abc"])
    #expect(r.code == 0, "\(r)")

    // A sandbox (and a file in its workspace) that must survive stop/start too.
    r = try env.run(["sandbox", "create", "keep-sb", "--", "sh", "-c", "echo kept > /sandbox/f"])
    #expect(r.code == 0, "\(r)")

    // A sandbox from the local CLI.
    try sandboxFromCLI(env, host)
    // And from the official Python SDK (through the same registry).
    try sandboxFromSDK(env)

    r = try env.run(["doctor", "logs", "--lines", "50"])
    #expect(r.code == 0 && r.out.contains("listening on 0.0.0.0:\(port)"), "\(r)")
    r = try env.run(["doctor", "exec", "--", "sh", "-c", "id -un; echo $OPENSHELL_GATEWAY"])
    #expect(r.code == 0 && r.out == "\(host.user)\nrgw\n", "\(r)")
    r = try env.run(["doctor", "exec", "--", "sh", "-c", "exit 7"])
    #expect(r.code == 7, "\(r)")
    r = try env.run(["doctor", "check"])
    #expect(r.code == 0 && r.out.contains("Gateway rgw (\(host.home)/.local/state/openshell/gateways/rgw)") && r.out.contains("All checks passed."), "\(r)")

    r = try env.run(["gateway", "stop"])
    #expect(r.code == 0 && r.out.contains("stopped"), "\(r)")
    #expect(!Self.running(pid), "the daemon (pid \(pid)) is gone")
    r = try env.run(["status"])
    #expect(r.code != 0, "\(r)")
    r = try env.run(["gateway", "start", "--name", "rgw"])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["provider", "list", "--names"])
    #expect(r.code == 0 && r.out.contains("keepme"), "\(r)")
    // The sandbox's supervisor reconnects to the restarted gateway.
    for _ in 0..<60 {
      r = try env.run(["sandbox", "exec", "keep-sb", "--", "cat", "/sandbox/f"])
      if r.code == 0 { break }
      usleep(500_000)
    }
    #expect(r.code == 0 && r.out == "kept\n", "\(r)")

    // --recreate: the old data dir is archived on the host, a new CA comes back.
    let oldCA = env.metadata("rgw")?["ca_fingerprint"] as? String
    r = try env.run(["gateway", "start", "--name", "rgw", "--recreate", "--yes"])
    #expect(r.code == 0, "\(r)")
    #expect(env.metadata("rgw")?["ca_fingerprint"] as? String != oldCA)
    let archive = host.home + "/.local/state/openshell/archive/rgw"
    #expect(((try? FileManager.default.contentsOfDirectory(atPath: archive)) ?? []).count == 1, "\(archive)")
    r = try env.run(["provider", "list", "--names"])
    #expect(r.code == 0 && !r.out.contains("keepme"), "\(r)")

    r = try env.run(["gateway", "destroy", "--name", "rgw", "--yes"])
    #expect(r.code == 0 && r.out.contains("destroyed"), "\(r)")
    #expect(env.metadata("rgw") == nil)
    let archived = (try? FileManager.default.contentsOfDirectory(atPath: archive)) ?? []
    #expect(archived.count == 2 && archived.contains { $0.hasSuffix("-destroyed") }, "\(archived)")
    #expect(!FileManager.default.fileExists(atPath: host.home + "/.local/state/openshell/gateways/rgw"))
  }

  @Test("--tunnel carries mTLS through ssh -L; an unreachable port falls back to it; a dead tunnel is restarted")
  func tunnel() async throws {
    guard let host = try SSHHostFixture.make() else { return }
    defer { host.destroy() }
    let env = try cli(host, "rtun")
    defer { env.cleanup() }

    let port = freePort()
    var r = try env.run(["gateway", "start", "--remote", SSHHostFixture.alias, "--name", "tun", "--port", "\(port)", "--tunnel"])
    try #require(r.code == 0, "\(r)")
    let meta = try #require(env.metadata("tun"))
    let ssh = try #require(meta["ssh"] as? [String: Any])
    let local = try #require(ssh["tunnel_local_port"] as? Int)
    #expect(meta["gateway_endpoint"] as? String == "https://127.0.0.1:\(local)")
    #expect(ssh["bind_address"] as? String == "127.0.0.1")
    // The gateway is not exposed on the host's network, only through the tunnel.
    r = try env.run(["-c", "import socket; socket.create_connection(('\(host.address)', \(port)), timeout=3)"], binary: "/usr/bin/python3")
    #expect(r.code != 0 && r.err.contains("refused"), "\(r)")
    r = try env.run(["status"])
    #expect(r.code == 0 && r.out.contains("Connected"), "\(r)")

    // Kill the tunnel: the next command brings it back.
    let pidText = try String(contentsOf: env.state.appendingPathComponent("openshell/tunnels/tun.pid"), encoding: .utf8)
    let tunnelPID = try #require(Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)))
    kill(tunnelPID, SIGKILL)
    usleep(300_000)
    r = try env.run(["status"])
    #expect(r.code == 0 && r.out.contains("Connected"), "\(r)")

    r = try env.run(["gateway", "destroy", "--name", "tun", "--yes"])
    #expect(r.code == 0, "\(r)")
    #expect(!FileManager.default.fileExists(atPath: env.state.appendingPathComponent("openshell/tunnels/tun.pid").path))

    // Automatic fallback: the host's firewall rejects the port from outside.
    let port2 = freePort()
    try SSHHostFixture.sh(
      "ip netns exec \(host.namespace) nft -f - <<'EOF'\ntable inet rtest {\n chain input {\n  type filter hook input priority 0;\n  iifname != \"lo\" tcp dport \(port2) reject with tcp reset\n }\n}\nEOF"
    )
    r = try env.run(["gateway", "start", "--remote", SSHHostFixture.alias, "--name", "fallback", "--port", "\(port2)"])
    try #require(r.code == 0, "\(r)")
    #expect(r.out.contains("is not reachable from this machine") && r.out.contains("SSH tunnel"), "\(r)")
    let fb = try #require(env.metadata("fallback"))
    #expect((fb["gateway_endpoint"] as? String)?.hasPrefix("https://127.0.0.1:") == true, "\(fb)")
    r = try env.run(["status"])
    #expect(r.code == 0 && r.out.contains("Connected"), "\(r)")

    // --keep-remote forgets the registration and leaves the host alone (its gateway keeps running).
    let pidFile = host.home + "/.local/state/openshell/gateways/fallback/gateway.pid"
    let pid = try #require(Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
    r = try env.run(["gateway", "destroy", "--name", "fallback", "--yes", "--keep-remote"])
    #expect(r.code == 0 && r.out.contains("registration only"), "\(r)")
    #expect(env.metadata("fallback") == nil)
    #expect(Self.running(pid), "the host's gateway was left running")
  }

  /// Alive and not a zombie (an exited daemon whose parent is gone may wait for init to reap it).
  static func running(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
    return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
  }

  /// `sandbox create` + `sandbox exec` + `sandbox connect` (ssh) on the remote gateway from the local CLI: the
  /// sandbox runs on the host (its hostname, the host's unprivileged user), confined (no_new_privs, no network but
  /// its proxy: a direct connection to the sshd listening on the host fails).
  func sandboxFromCLI(_ env: CLIEnv, _ host: SSHHostFixture) throws {
    let r = try env.run(["sandbox", "create", "remote-sb", "--", "sh", "-c", "echo made-on-$(hostname)"])
    #expect(r.code == 0 && r.out.contains("made-on-remote-sb"), "\(r)")
    let e = try env.run(["sandbox", "exec", "remote-sb", "--", "sh", "-c", "id -u; grep NoNewPrivs /proc/self/status"])
    #expect(e.code == 0 && e.out == "\(host.userID ?? 0)\nNoNewPrivs:\t1\n", "\(e)")
    // ssh into it (the system ssh through ssh-proxy): the host's user is the sandbox user `sandbox` (issue 11;
    // refused with "Permission denied (publickey)" before).
    let c = try env.run(["sandbox", "connect", "remote-sb", "--", "id -un; id -u; grep NoNewPrivs /proc/self/status; exit 5"])
    #expect(c.code == 5 && c.out == "sandbox\n\(host.userID ?? 0)\nNoNewPrivs:\t1\n", "\(c)")
    let direct = try env.run([
      "sandbox", "exec", "remote-sb", "--", "python3", "-c",
      "import socket; socket.create_connection(('\(host.address)', 22), timeout=5)",
    ])
    #expect(direct.code != 0 && direct.err.contains("Network is unreachable"), "\(direct)")
    let d = try env.run(["sandbox", "delete", "remote-sb"])
    #expect(d.code == 0, "\(d)")
  }

  /// The official SDK (Tests/conformance venv) against the same registration.
  func sandboxFromSDK(_ env: CLIEnv) throws {
    let python = Self.repo.appendingPathComponent(".build-venv/bin/python").path
    guard FileManager.default.isExecutableFile(atPath: python) else {
      print("skipped SDK part: \(python) not found (run Tests/conformance/run.sh once)")
      return
    }
    let script = """
      import openshell
      with openshell.SandboxClient.from_active_cluster(timeout=30) as c:
          print("HEALTH", c.health())
      with openshell.Sandbox(workspace="default", ready_timeout_seconds=120) as sb:
          r = sb.exec(["sh", "-c", "echo sdk-$((6*7)) on $(hostname)"], timeout_seconds=60)
          print("EXEC", r.exit_code, r.stdout.strip(), sb.sandbox.name)
      """
    let r = try env.run(["-c", script], binary: python)
    #expect(r.code == 0 && r.out.contains("HEALTH") && r.out.contains("EXEC 0 sdk-42 on "), "\(r)")
    let words = r.out.split(separator: "\n").first { $0.hasPrefix("EXEC") }?.split(separator: " ") ?? []
    #expect(words.count == 6 && words[4] == words[5], "the command ran in the sandbox (its hostname is its name): \(r)")
  }
}
