import Foundation
import GRPCCore
import Testing

/// `sandbox ssh-config`, `sandbox connect` and `ssh-proxy` against a real daemon and a real sandbox,
/// driven by Debian's OpenSSH client (`ssh`, `scp`, `sftp`, and `rsync` over ssh) and a pseudo-terminal (issue 11).
@Suite("CLI SSH tunnel", .serialized, .timeLimit(.minutes(10)))
struct SSHCLITests {
  static func sha256(_ env: CLIEnv, _ path: String) throws -> String {
    String(try env.run([path], binary: "/usr/bin/sha256sum").out.prefix(64))
  }

  /// A python script that runs `openshell sandbox connect NAME` on a pseudo-terminal, types a line,
  /// and prints what it read and the exit code.
  static let ptyDriver = """
    import os, pty, select, sys, time
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.argv[1], [sys.argv[1], "sandbox", "connect", sys.argv[2]])
    out = b""
    def pump(seconds, until=None):
        global out
        end = time.time() + seconds
        while time.time() < end:
            if until is not None and until in out:
                return
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    d = os.read(fd, 4096)
                except OSError:
                    return
                if not d:
                    return
                out += d
    pump(15, b"$ ")
    os.write(fd, b"echo marker-$((6*7)); tty; id -un; exit 3\\n")
    pump(15)
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(out.decode(errors="replace"))
    sys.stdout.write("\\nEXIT %d\\n" % os.waitstatus_to_exitcode(status))
    """

  @Test("ssh/scp/sftp/rsync through ssh-config, connect on a pty and with a command, pinned host key, audit without tokens")
  func sshTunnelEndToEnd() async throws {
    let env = try CLIEnv("ssh")
    defer { env.cleanup() }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "sshgw", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "box"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["sandbox", "delete", "box"]) }

    // ssh-config: a Host block that pins the key (never StrictHostKeyChecking no).
    r = try env.run(["sandbox", "ssh-config", "box"])
    try #require(r.code == 0, "\(r)")
    #expect(r.out.contains("Host openshell-box.default") && r.out.contains("StrictHostKeyChecking yes") && !r.out.contains("StrictHostKeyChecking no"), "\(r)")
    #expect(r.out.contains("ssh-proxy -g sshgw --name box --workspace default"), "\(r)")
    // The fast key exchange and AES-GCM first (connect time and throughput, issue 11 benchmark).
    #expect(r.out.contains("KexAlgorithms curve25519-sha256,") && r.out.contains("Ciphers aes256-gcm@openssh.com,"), "\(r)")
    let config = env.root.appendingPathComponent("ssh_config").path
    try r.out.write(toFile: config, atomically: true, encoding: .utf8)
    let host = "openshell-box.default"

    // A command as the sandbox user, confined like every workload process.
    r = try env.run(
      ["-F", config, host, "id -un; id -u; echo hi; grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status; cat /etc/shadow"], binary: "/usr/bin/ssh")
    #expect(r.code == 1, "cat /etc/shadow fails last (the host's account files are not in the sandbox): \(r)")
    let lines = r.out.split(separator: "\n").map(String.init)
    #expect(lines.first == "sandbox", "\(r)")
    #expect(lines.count > 1 && lines[1] != "0", "\(r)")
    #expect(lines.contains("hi"))
    #expect(r.out.contains("NoNewPrivs:\t1") && r.out.contains("Seccomp:\t2") && r.out.contains("CapEff:\t0000000000000000"), "\(r)")
    #expect(r.err.contains("/etc/shadow: No such file or directory"), "\(r)")

    // The operator's ssh-agent is not forwarded into the sandbox, even when the client asks (ssh -A, as VS Code does).
    r = try env.run(
      ["-c", "eval $(ssh-agent -s) >/dev/null; ssh -A -F '\(config)' \(host) 'echo agent=${SSH_AUTH_SOCK:-none}'; kill $SSH_AGENT_PID"], binary: "/bin/sh")
    #expect(r.out.contains("agent=none"), "\(r)")

    // The pinned key is the sandbox's host key (the public half the gateway wrote).
    let knownHosts = try String(contentsOfFile: env.config.appendingPathComponent("openshell/ssh/known_hosts").path, encoding: .utf8)
    let sandboxes = env.dataDir("sshgw").appendingPathComponent("sandboxes").path
    let ids = try FileManager.default.contentsOfDirectory(atPath: sandboxes)
    try #require(ids.count == 1)
    let pub = try String(contentsOfFile: "\(sandboxes)/\(ids[0])/run/ssh_host_ed25519_key.pub", encoding: .utf8).split(separator: " ")
    #expect(knownHosts == "\(host) ssh-ed25519 \(pub[1])\n", "\(knownHosts)")

    // The agent (any other workload process) cannot read the SSH host key.
    r = try env.run(["sandbox", "exec", "box", "--", "cat", "/run/openshell/ssh_host_ed25519_key"])
    #expect(r.code != 0 && r.err.contains("Permission denied") && !r.out.contains("PRIVATE KEY"), "\(r)")
    // Nor can an SSH session, whatever it runs: a command, sftp, or a login shell whose profile the agent wrote.
    r = try env.run(["-F", config, host, "cat /run/openshell/ssh_host_ed25519_key"], binary: "/usr/bin/ssh")
    #expect(r.code != 0 && r.err.contains("Permission denied") && !r.out.contains("PRIVATE KEY"), "\(r)")
    let keyBatch = env.root.appendingPathComponent("key.batch").path
    try "get /run/openshell/ssh_host_ed25519_key \(env.root.path)/stolen\n".write(toFile: keyBatch, atomically: true, encoding: .utf8)
    r = try env.run(["-F", config, "-b", keyBatch, host], binary: "/usr/bin/sftp")
    #expect(r.code != 0 && !FileManager.default.fileExists(atPath: env.root.path + "/stolen"), "\(r)")
    r = try env.run(["sandbox", "exec", "box", "--", "sh", "-c", "echo 'cat /run/openshell/ssh_host_ed25519_key > /sandbox/stolen 2>&1' > /sandbox/.profile"])
    #expect(r.code == 0, "\(r)")
    _ = try env.run(["10", "/usr/bin/ssh", "-F", config, "-tt", host], binary: "/usr/bin/timeout")
    r = try env.run(["sandbox", "exec", "box", "--", "sh", "-c", "cat /sandbox/stolen; rm -f /sandbox/stolen /sandbox/.profile"])
    #expect(r.out.contains("Permission denied") && !r.out.contains("PRIVATE KEY"), "\(r)")

    // scp up, sftp down: the same bytes.
    let local = env.root.appendingPathComponent("payload.bin").path
    var bytes = [UInt8](repeating: 0, count: 3 << 20)
    for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
    FileManager.default.createFile(atPath: local, contents: Data(bytes))
    let digest = try Self.sha256(env, local)
    #expect(digest.count == 64)
    r = try env.run(["-F", config, local, "\(host):/sandbox/payload.bin"], binary: "/usr/bin/scp")
    #expect(r.code == 0, "\(r)")
    r = try env.run(["-F", config, host, "sha256sum /sandbox/payload.bin"], binary: "/usr/bin/ssh")
    #expect(r.out.hasPrefix(digest), "\(r)")
    let back = env.root.appendingPathComponent("back.bin").path
    let batch = env.root.appendingPathComponent("sftp.batch").path
    try "get /sandbox/payload.bin \(back)\n".write(toFile: batch, atomically: true, encoding: .utf8)
    r = try env.run(["-F", config, "-b", batch, host], binary: "/usr/bin/sftp")
    #expect(r.code == 0, "\(r)")
    #expect(try Self.sha256(env, back) == digest)

    // rsync over the same ssh-config (rsync runs on both ends): a directory up, and back down.
    let tree = env.root.appendingPathComponent("tree").path
    try FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: tree + "/sub/a.bin", contents: Data(bytes.prefix(1 << 20)))
    try "hello rsync\n".write(toFile: tree + "/b.txt", atomically: true, encoding: .utf8)
    let treeDigest = try Self.sha256(env, tree + "/sub/a.bin")
    r = try env.run(["-a", "-e", "ssh -F \(config)", tree + "/", "\(host):/sandbox/tree/"], binary: "/usr/bin/rsync")
    #expect(r.code == 0, "\(r)")
    r = try env.run(["-F", config, host, "cat /sandbox/tree/b.txt; sha256sum /sandbox/tree/sub/a.bin"], binary: "/usr/bin/ssh")
    #expect(r.out.hasPrefix("hello rsync\n") && r.out.contains(treeDigest), "\(r)")
    let treeBack = env.root.appendingPathComponent("tree-back").path
    r = try env.run(["-a", "-e", "ssh -F \(config)", "\(host):/sandbox/tree/", treeBack + "/"], binary: "/usr/bin/rsync")
    #expect(r.code == 0, "\(r)")
    #expect(try Self.sha256(env, treeBack + "/sub/a.bin") == treeDigest)
    #expect((try? String(contentsOfFile: treeBack + "/b.txt", encoding: .utf8)) == "hello rsync\n")

    // connect with a command: its exit code; on a pseudo-terminal: a shell with a tty.
    r = try env.run(["sandbox", "connect", "box", "--", "echo via-connect; exit 7"])
    #expect(r.code == 7 && r.out == "via-connect\n", "\(r)")
    let script = env.root.appendingPathComponent("drive.py").path
    try Self.ptyDriver.write(toFile: script, atomically: true, encoding: .utf8)
    r = try env.run([script, CLIEnv.openshell, "box"], binary: "/usr/bin/python3")
    #expect(r.out.contains("marker-42") && r.out.contains("/dev/pts/") && r.out.contains("\nsandbox\r\n"), "\(r)")
    #expect(r.out.contains("EXIT 3"), "\(r)")

    // A host key other than the recorded one is refused before ssh trusts it.
    let session = try await env.withClient("sshgw") { c in
      try await c.createSshSession(
        .with {
          $0.sandbox = "box"; $0.workspaceScope = .with { $0.workspace = "default" }
        })
    }
    let wrongFingerprint = "SHA256:" + String(repeating: "A", count: 43)
    let scratchKnown = env.root.appendingPathComponent("kh").path
    let proxy =
      "\(CLIEnv.openshell) ssh-proxy -g sshgw --sandbox-id \(session.sandboxID) --host-key-fingerprint \(wrongFingerprint) --known-hosts \(scratchKnown) --host-alias x"
    r = try env.run(
      [
        "-F", "/dev/null", "-o", "ProxyCommand=\(proxy)", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=\(scratchKnown)",
        "-o", "HostKeyAlias=x", "-o", "BatchMode=yes", "sandbox@x", "true",
      ],
      binary: "/usr/bin/ssh", env: ["OPENSHELL_SSH_TOKEN": session.token])
    #expect(r.code == 255 && r.err.contains("is not the one the gateway recorded"), "\(r)")
    #expect(!FileManager.default.fileExists(atPath: scratchKnown))
    // The right one works with the same token; the token never reaches the output.
    let good = proxy.replacingOccurrences(of: wrongFingerprint, with: session.hostKeyFingerprint)
    r = try env.run(
      [
        "-F", "/dev/null", "-o", "ProxyCommand=\(good)", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=\(scratchKnown)",
        "-o", "HostKeyAlias=x", "-o", "BatchMode=yes", "-i", env.config.appendingPathComponent("openshell/ssh/id_ed25519").path,
        "sandbox@x", "echo ok",
      ],
      binary: "/usr/bin/ssh", env: ["OPENSHELL_SSH_TOKEN": session.token])
    #expect(r.code == 0 && r.out == "ok\n", "\(r)")

    // Every tunnel is in the audit; no token appears in the audit, the gateway log or sandbox logs.
    r = try env.replay(["audit", env.dataDir("sshgw").appendingPathComponent("log").path])
    #expect(r.code == 0, "\(r)")
    let opened = r.out.components(separatedBy: "ssh.tunnel_opened").count - 1
    let closed = r.out.components(separatedBy: "ssh.tunnel_closed").count - 1
    #expect(opened >= 7 && closed == opened, "opened \(opened), closed \(closed)\n\(r.out)")
    #expect(!r.out.contains(session.token))
    let gatewayLog = (try? String(contentsOf: env.dataDir("sshgw").appendingPathComponent("gateway.log"), encoding: .utf8)) ?? ""
    #expect(!gatewayLog.contains(session.token))
    // A peer that closed mid-write (the end of an scp or sftp) is not an unclassified error (ErrorFunnel: PEER_GONE).
    #expect(!gatewayLog.contains("unclassified error"), "\(gatewayLog.split(separator: "\n").filter { $0.contains("unclassified") })")
    r = try env.run(["logs", "box"])
    #expect(!r.out.contains(session.token) && r.out.contains("ssh session"), "\(r)")

    r = try env.run(["sandbox", "delete", "box"])
    #expect(r.code == 0, "\(r)")
    _ = try env.run(["gateway", "stop", "--name", "sshgw"])
  }

  @Test("upload/download (0 B, 20 MB, a directory) checked by sha256; forward start/list/stop to a python http.server in the sandbox")
  func transfersAndForwards() async throws {
    let env = try CLIEnv("sshfwd")
    defer { env.cleanup() }
    var r = try env.run(["gateway", "start", "--name", "fwd", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "box"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["sandbox", "delete", "box"]) }

    let root = env.root.path
    FileManager.default.createFile(atPath: root + "/empty.bin", contents: Data())
    var big = [UInt8](repeating: 0, count: 20_000_000)
    for i in stride(from: 0, to: big.count, by: 8) { withUnsafeBytes(of: UInt64.random(in: 0...UInt64.max)) { for j in 0..<8 { big[i + j] = $0[j] } } }
    FileManager.default.createFile(atPath: root + "/big.bin", contents: Data(big))
    try FileManager.default.createDirectory(atPath: root + "/tree/sub", withIntermediateDirectories: true)
    try "a\n".write(toFile: root + "/tree/a", atomically: true, encoding: .utf8)
    try "bb\n".write(toFile: root + "/tree/sub/b", atomically: true, encoding: .utf8)

    r = try env.run(["sandbox", "upload", "box", root + "/empty.bin", "/sandbox/in"])
    #expect(r.code == 0 && r.out.contains("Uploaded 0 bytes (1 file, checked)"), "\(r)")
    r = try env.run(["sandbox", "upload", "box", root + "/big.bin", "/sandbox/in"])
    #expect(r.code == 0 && r.out.contains("Uploaded 20000000 bytes"), "\(r)")
    r = try env.run(["sandbox", "upload", "box", root + "/tree", "/sandbox/in"])
    #expect(r.code == 0 && r.out.contains("Uploaded 5 bytes (2 files, checked)"), "\(r)")
    // Owned by the sandbox user inside.
    r = try env.run(["sandbox", "exec", "box", "--", "stat", "-c", "%U %s", "/sandbox/in/big.bin"])
    #expect(r.out == "sandbox 20000000\n", "\(r)")

    let back = root + "/back"
    for path in ["/sandbox/in/empty.bin", "/sandbox/in/big.bin", "in/tree"] {
      r = try env.run(["sandbox", "download", "box", path, back])
      #expect(r.code == 0 && r.out.contains("checked"), "\(r)")
    }
    #expect(try Self.sha256(env, back + "/big.bin") == Self.sha256(env, root + "/big.bin"))
    #expect(try Self.sha256(env, back + "/empty.bin") == Self.sha256(env, root + "/empty.bin"))
    #expect((try? String(contentsOfFile: back + "/tree/sub/b", encoding: .utf8)) == "bb\n")
    r = try env.run(["sandbox", "download", "box", "/sandbox/nope", back])
    #expect(r.code == 1 && r.err.contains("no such file or directory") && !r.out.contains("✓"), "\(r)")

    // The agent attacks the operator's download (run as root here): a ~/.ssh/rc whose output would lead the
    // tar stream is never run, and a set-user-ID file it made is refused with nothing left behind.
    r = try env.run([
      "sandbox", "exec", "box", "--", "sh", "-c",
      "mkdir -p /sandbox/.ssh && printf '#!/bin/sh\\ntouch /sandbox/rc-ran\\necho injected\\n' > /sandbox/.ssh/rc && chmod +x /sandbox/.ssh/rc && mkdir -p /sandbox/loot && echo x > /sandbox/loot/su && chmod 4755 /sandbox/loot/su",
    ])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "download", "box", "/sandbox/loot", back])
    #expect(r.code == 0 && r.out.contains("checked") && !r.out.contains("injected"), "\(r)")
    // Extracted as the caller's own files without the set-user-ID bit (tar --no-same-owner --no-same-permissions).
    let attributes = try FileManager.default.attributesOfItem(atPath: back + "/loot/su")
    let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
    #expect(mode >= 0 && mode & 0o7000 == 0, "mode \(String(mode, radix: 8))")
    #expect((attributes[.ownerAccountID] as? NSNumber)?.intValue == Int(getuid()))
    #expect(((try? FileManager.default.contentsOfDirectory(atPath: back)) ?? []).allSatisfy { !$0.hasPrefix(".openshell-download-") })
    r = try env.run(["sandbox", "exec", "box", "--", "sh", "-c", "test -e /sandbox/rc-ran && echo RAN || echo clean"])
    #expect(r.out == "clean\n", "~/.ssh/rc must not run: \(r)")

    try FileManager.default.createDirectory(atPath: root + "/hollow", withIntermediateDirectories: true)
    r = try env.run(["sandbox", "upload", "box", root + "/hollow"])
    #expect(r.code == 1 && r.err.contains("nothing was copied") && !r.out.contains("✓"), "\(r)")

    // A web server on the sandbox's loopback, reached from here through a background forward.
    let port = freePort()
    r = try env.run([
      "sandbox", "connect", "box", "--",
      "cd /sandbox/in && echo from-sandbox > hello.txt && setsid python3 -m http.server \(port) --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &",
    ])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["forward", "start", "\(port)", "box", "--background"])
    #expect(r.code == 0 && r.out.contains("Forwarding 127.0.0.1:\(port)"), "\(r)")
    var body = ""
    for _ in 0..<50 {
      let c = try env.run(["-s", "-m", "2", "--noproxy", "*", "http://127.0.0.1:\(port)/hello.txt"], binary: "/usr/bin/curl")
      if c.code == 0, !c.out.isEmpty { body = c.out; break }
      try await Task.sleep(for: .milliseconds(200))
    }
    #expect(body == "from-sandbox\n")
    r = try env.run(["forward", "list"])
    #expect(r.out.contains("box") && r.out.contains("127.0.0.1:\(port)") && r.out.contains("running"), "\(r)")
    r = try env.run(["forward", "start", "\(port)", "box", "--background"])
    #expect(r.code == 1 && r.err.contains("already forwarded"), "\(r)")
    r = try env.run(["forward", "stop", "\(port)"])
    #expect(r.code == 0, "\(r)")
    try await Task.sleep(for: .milliseconds(300))
    let after = try env.run(["-s", "-m", "2", "--noproxy", "*", "http://127.0.0.1:\(port)/hello.txt"], binary: "/usr/bin/curl")
    #expect(after.code != 0, "\(after)")
    r = try env.run(["forward", "list"])
    #expect(r.out.contains("No active forwards"), "\(r)")
    r = try env.run(["forward", "start", "99999", "box"])
    #expect(r.code != 0 && r.err.contains("invalid port"), "\(r)")

    r = try env.run(["sandbox", "delete", "box"])
    #expect(r.code == 0, "\(r)")
    _ = try env.run(["gateway", "stop", "--name", "fwd"])
  }
}
