import Foundation
import SandboxProtocol
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Issue 10, the variant without root: a gateway running as an unprivileged user (`nobody`) confines its
/// sandboxes' network with a private namespace the supervisor makes itself (Supervisor
/// `PrivateNetwork`). Attacked from inside a real sandbox with curl and python3: the proxy is the only
/// way out, and it decides as with a root gateway (host, port, calling binary).
@Suite("Unprivileged network confinement", .serialized, .timeLimit(.minutes(10)))
struct UnprivilegedNetworkTests {
  static let nobody: UInt32 = 65534

  /// Runs `openshell ARGS` as nobody (setpriv), with the environment's private XDG directories.
  static func asNobody(_ env: CLIEnv, _ args: [String]) throws -> CLIEnv.Result {
    try env.run(
      ["--reuid", "\(nobody)", "--regid", "\(nobody)", "--clear-groups", "--", CLIEnv.openshell] + args,
      binary: "/usr/bin/setpriv", env: ["HOME": env.root.path])
  }

  /// A python3 HTTP server on the host's 127.0.0.1 serving `hello.txt`; returns (pid, port).
  static func upstream(_ dir: String) throws -> (Int32, Int) {
    try "hello-unprivileged\n".write(toFile: dir + "/hello.txt", atomically: true, encoding: .utf8)
    let script = """
      import http.server, os, sys
      os.chdir(sys.argv[1])
      class H(http.server.SimpleHTTPRequestHandler):
          def log_message(self, *a): pass
      s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
      open(sys.argv[2] + '.tmp', 'w').write(str(s.server_address[1])); os.rename(sys.argv[2] + '.tmp', sys.argv[2])
      s.serve_forever()
      """
    let p = try Spawner.spawn("/usr/bin/python3", ["-c", script, dir, dir + "/port"], environment: ["PATH": "/usr/bin:/bin"])
    for _ in 0..<500 {
      if let t = try? String(contentsOfFile: dir + "/port", encoding: .utf8), let port = Int(t) { return (p.pid, port) }
      usleep(10_000)
    }
    kill(p.pid, SIGKILL)
    _ = Spawner.waitBlocking(p.pid)
    throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "upstream did not start"])
  }

  @Test("gateway as nobody: proxy-only egress, binary identity, direct TCP/UDP fail at once, proxy port cannot be taken over")
  func unprivilegedSandboxIsConfined() throws {
    let env = try CLIEnv("unpriv-net")
    defer { env.cleanup() }
    #expect(chown(env.root.path, Self.nobody, Self.nobody) == 0)
    for d in [env.config.path, env.state.path] { #expect(chown(d, Self.nobody, Self.nobody) == 0) }
    let upDir = env.root.appendingPathComponent("up").path
    try FileManager.default.createDirectory(atPath: upDir, withIntermediateDirectories: true)
    let (upPID, up) = try Self.upstream(upDir)
    defer {
      kill(upPID, SIGKILL)
      _ = Spawner.waitBlocking(upPID)
    }
    // A UDP listener on the host's loopback: nothing sent from the sandbox may arrive.
    let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    defer { close(udp) }
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(udp, $0, len) } }
    _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(udp, $0, &len) } }
    let udpPort = Int(UInt16(bigEndian: sa.sin_port))

    let port = freePort()
    var r = try Self.asNobody(env, ["gateway", "start", "--name", "unpriv", "--port", "\(port)"])
    // On every path: the sandbox is deleted (the defer below runs first), then the gateway stops, and nothing
    // of either is left (a sandbox outlives its gateway's stop, so a delete after the stop left it running).
    defer { UnprivilegedSSHTests.stopAndExpectNothingLeft(env, gateway: "unpriv") }
    try #require(r.code == 0, "\(r)")
    // The gateway really runs as nobody.
    let pidText = try String(contentsOf: env.dataDir("unpriv").appendingPathComponent("gateway.pid"), encoding: .utf8)
    let status = try String(contentsOfFile: "/proc/\(pidText.trimmingCharacters(in: .whitespacesAndNewlines))/status", encoding: .utf8)
    #expect(status.split(separator: "\n").contains { $0.hasPrefix("Uid:") && $0.split(separator: "\t").dropFirst().allSatisfy { $0 == "65534" } }, "\(status)")

    let policy = env.root.appendingPathComponent("policy.yaml").path
    try """
    version: 1
    filesystem_policy:
      include_workdir: true
      read_only: [/usr, /lib, /etc, /proc]
      read_write: [/sandbox, /tmp]
    network_policies:
      local:
        endpoints:
          - host: 127.0.0.1
            port: \(up)
            allowed_ips: [127.0.0.1]
        binaries:
          - path: /usr/bin/curl

    """.write(toFile: policy, atomically: true, encoding: .utf8)
    _ = chmod(policy, 0o644)
    r = try Self.asNobody(env, ["sandbox", "create", "box", "--policy", policy])
    defer { _ = try? Self.asNobody(env, ["sandbox", "delete", "box"]) }
    try #require(r.code == 0, "\(r)")
    // Waits for the proxy to enforce the policy (policy set --wait semantics: loaded only once enforced).
    r = try Self.asNobody(env, ["policy", "set", "box", "--policy", policy, "--wait"])
    try #require(r.code == 0, "\(r)")

    func exec(_ command: [String]) throws -> CLIEnv.Result {
      try Self.asNobody(env, ["sandbox", "exec", "box", "--", "/usr/bin/env", "NO_PROXY=", "no_proxy="] + command)
    }
    // The agent's proxy address is its own loopback.
    r = try exec(["/bin/sh", "-c", "echo $HTTP_PROXY"])
    #expect(r.out.trimmingCharacters(in: .whitespacesAndNewlines) == "http://127.0.0.1:3128", "\(r)")
    // Allowed: curl through the proxy, absolute-form and CONNECT tunnel.
    r = try exec(["/usr/bin/curl", "-sS", "--max-time", "10", "http://127.0.0.1:\(up)/hello.txt"])
    #expect(r.code == 0 && r.out == "hello-unprivileged\n", "\(r)")
    r = try exec(["/usr/bin/curl", "-sS", "-p", "--max-time", "10", "http://127.0.0.1:\(up)/hello.txt"])
    #expect(r.code == 0 && r.out == "hello-unprivileged\n", "\(r)")
    // Unlisted host:port (the gateway's own port, through the proxy): 403 with the reason.
    r = try exec(["/usr/bin/curl", "-sS", "--max-time", "10", "-w", "%{http_code}", "http://127.0.0.1:\(port)/healthz"])
    #expect(r.out.hasSuffix("403") && r.out.contains("no network policy"), "\(r)")
    // Same host, another binary: python3 is not in the policy's binaries (caller identity works).
    r = try exec([
      "/usr/bin/python3", "-c",
      "import urllib.request\ntry:\n  urllib.request.urlopen('http://127.0.0.1:\(up)/hello.txt', timeout=10); print('ALLOWED')\nexcept Exception as e:\n  print('DENIED', getattr(e, 'code', e), e.read().decode() if hasattr(e, 'read') else '')",
    ])
    #expect(r.out.hasPrefix("DENIED 403") && r.out.contains("python3"), "\(r)")

    // Direct traffic, no proxy: refused or unreachable at once, never a hang; nothing reaches the host.
    // 192.0.2.1 (TEST-NET-1) has no route in the sandbox: the kernel refuses before any packet exists.
    r = try Self.asNobody(
      env,
      [
        "sandbox", "exec", "box", "--", "/usr/bin/python3", "-c",
        """
        import socket, time
        for host, port in [('127.0.0.1', \(port)), ('127.0.0.1', \(up)), ('192.0.2.1', \(up))]:
            s = socket.socket(); s.settimeout(5); t = time.time()
            try:
                s.connect((host, port)); r = 'CONNECTED'
            except OSError as e:
                r = 'errno %d' % e.errno
            print('tcp %s:%d %s %s' % (host, port, r, 'fast' if time.time() - t < 1 else 'SLOW'))
        for host, port in [('127.0.0.1', \(udpPort)), ('192.0.2.1', 53)]:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.sendto(b'openshell-udp-probe', (host, port)); print('udp %s:%d sent' % (host, port))
            except OSError as e:
                print('udp %s:%d errno %d' % (host, port, e.errno))
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(('127.0.0.1', 3128)); print('proxy port TAKEN')
        except OSError as e:
            print('bind 3128 errno %d' % e.errno)
        print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]))
        # The proxy is the supervisor, same user: it must be out of reach (signal 0 and reads only probe).
        import os, fcntl, resource
        sup = [int(p) for p in os.listdir('/proc') if p.isdigit() and open('/proc/%s/cmdline' % p, 'rb').read().startswith(b'/opt/openshell/bin/openshell-sandbox')][0]
        def probe(name, f):
            try:
                f(); print(name, 'ALLOWED')
            except OSError as e:
                print(name, 'errno', e.errno)
        probe('kill', lambda: os.kill(sup, 0))
        probe('killpg', lambda: os.kill(-sup, 0))
        probe('kill-all', lambda: os.kill(-1, 0))
        probe('init', lambda: os.kill(1, 0))
        held = socket.socket()
        probe('setown', lambda: fcntl.fcntl(held.fileno(), fcntl.F_SETOWN, sup))
        probe('prlimit', lambda: resource.prlimit(sup, resource.RLIMIT_NOFILE))
        probe('mem', lambda: open('/proc/%d/mem' % sup, 'rb'))
        probe('environ', lambda: open('/proc/%d/environ' % sup, 'rb').read())
        """,
      ])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("tcp 127.0.0.1:\(port) errno 111 fast"), "\(r)")
    #expect(r.out.contains("tcp 127.0.0.1:\(up) errno 111 fast"), "\(r)")
    #expect(r.out.contains("tcp 192.0.2.1:\(up) errno 101 fast"), "\(r)")
    #expect(r.out.contains("udp 192.0.2.1:53 errno 101"), "\(r)")
    #expect(r.out.contains("bind 3128 errno 98"), "\(r)")
    #expect(r.out.contains("['lo']"), "only a loopback interface: \(r)")
    for probe in ["kill", "killpg", "kill-all", "init", "setown", "prlimit"] {
      #expect(r.out.contains("\(probe) errno 1\n"), "\(probe): \(r)")
    }
    for probe in ["mem", "environ"] { #expect(r.out.contains("\(probe) errno 13\n"), "\(probe): \(r)") }
    usleep(200_000)
    var buf = [UInt8](repeating: 0, count: 64)
    #expect(recv(udp, &buf, buf.count, 0) < 0, "a UDP datagram from the sandbox reached the host's loopback")

    // Denials are in the sandbox's log with host, port, binary and reason.
    r = try Self.asNobody(env, ["logs", "box", "-n", "500"])
    #expect(r.out.contains("python3") && r.out.contains("127.0.0.1:\(port)"), "\(r)")
    // ... and, aggregated (one event per sandbox per 10 s window), in the audit of the gateway's log.
    let log = env.dataDir("unpriv").appendingPathComponent("log").path
    var audit = CLIEnv.Result(code: -1, out: "", err: "", seconds: 0)
    for _ in 0..<60 {
      audit = try env.replay(["audit", log, "--sandbox", "box"])
      if audit.out.contains("network denied") && audit.out.contains("python3") { break }
      usleep(500_000)
    }
    #expect(audit.out.contains("network denied") && audit.out.contains("127.0.0.1:\(up) by /usr/bin/python3"), "\(audit)")
  }

  @Test("a host that refuses unprivileged user namespaces: the sandbox fails with NetworkConfinementUnavailable, never runs open")
  func refusedHostFailsClosed() throws {
    let env = try CLIEnv("unpriv-refused")
    defer { env.cleanup() }
    for d in [env.root.path, env.config.path, env.state.path] { #expect(chown(d, Self.nobody, Self.nobody) == 0) }
    // The gateway runs as nobody inside a user namespace that allows no further user namespaces
    // (bwrap --disable-userns: max_user_namespaces 0 below it), as on a host with them switched off.
    let port = freePort()
    var r = try env.run(
      [
        "--reuid", "\(Self.nobody)", "--regid", "\(Self.nobody)", "--clear-groups", "--", "/usr/bin/bwrap", "--unshare-user", "--disable-userns",
        "--dev-bind", "/", "/", "--", CLIEnv.openshell, "gateway", "start", "--name", "refused", "--port", "\(port)",
      ],
      binary: "/usr/bin/setpriv", env: ["HOME": env.root.path])
    defer { UnprivilegedSSHTests.stopAndExpectNothingLeft(env, gateway: "refused") }
    try #require(r.code == 0, "\(r)")
    r = try Self.asNobody(env, ["sandbox", "create", "box", "--", "/bin/true"])
    #expect(r.code != 0, "\(r)")
    r = try Self.asNobody(env, ["sandbox", "get", "box"])
    #expect(r.out.contains("NetworkConfinementUnavailable") && r.out.contains("user namespace") && r.out.contains("never runs with an open network"), "\(r)")
    #expect(!r.out.contains("Ready"), "\(r)")
  }
}
