import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Gateway
import OpenShellAPI
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell-sandbox-bench --ssh`: the SSH tunnel (issue 11) beside plain OpenSSH.
/// - connect: `ssh HOST true` N times through the tunnel (this binary as `ProxyCommand`, which opens
///   ForwardTcp with a session token, as `openshell ssh-proxy` does) and N times to a local `sshd -i`
///   started directly as the `ProxyCommand`; p50/p99 of each.
/// - throughput: `ssh HOST 'cat > /dev/null'` fed a file of `--ssh-megabytes` MiB (up) and `ssh HOST 'yes |
///   head -c N'` into /dev/null (down), and `scp` of such a file each way, both ways of reaching sshd.
/// - keystroke round trip and forwarded HTTP latency (``LatencyBench``).
enum SSHBench {
  static let tokenVariable = "OPENSHELL_SSH_TOKEN"

  static func run(
    _ c: Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>, gateway: RunningGateway, port: Int, dataDir: String, connects: Int, megabytes: Int
  ) async throws {
    let ws = Openshell_Datamodel_V1_WorkspaceSelector.with { $0.workspace = "default" }
    _ = try await c.createSandbox(
      .with {
        $0.name = "ssh-bench"; $0.workspaceScope = ws
      })
    while try await c.getSandbox(
      .with {
        $0.name = "ssh-bench"; $0.workspaceScope = ws
      }
    ).sandbox.status.phase != .ready {
      try await Task.sleep(for: .milliseconds(20))
    }
    let session = try await c.createSshSession(
      .with {
        $0.sandbox = "ssh-bench"; $0.workspaceScope = ws
      })
    let scratch = dataDir + "/ssh-bench"
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    _ = try ProxyBench.hostOut(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", scratch + "/id"])
    _ = try ProxyBench.hostOut(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", scratch + "/hk"])
    let sandboxKey = try String(contentsOfFile: "\(dataDir)/sandboxes/\(session.sandboxID)/run/ssh_host_ed25519_key.pub", encoding: .utf8)
    let localKey = try String(contentsOfFile: scratch + "/hk.pub", encoding: .utf8)
    try "tunnel \(sandboxKey)local \(localKey)".write(toFile: scratch + "/known_hosts", atomically: true, encoding: .utf8)
    let pki = gateway.pki!
    let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    let tunnelProxy = [
      me, "--ssh-proxy-port", String(port), "--ssh-proxy-sandbox", session.sandboxID, "--ssh-proxy-cert", pki.clientCertificatePath,
      "--ssh-proxy-key", pki.clientKeyPath, "--ssh-proxy-ca", pki.caCertificatePath,
    ].joined(separator: " ")
    // The baseline: OpenSSH's sshd in inetd mode as the ProxyCommand (root; privilege separation needs /run/sshd).
    try? FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    let localProxy =
      "/usr/sbin/sshd -i -f /dev/null -o HostKey=\(scratch)/hk -o UsePAM=no -o AuthenticationMethods=publickey "
      + "-o AuthorizedKeysFile=\(scratch)/id.pub -o PermitRootLogin=prohibit-password -o StrictModes=no -o PidFile=none -o LogLevel=ERROR "
      + "-o 'Subsystem=sftp internal-sftp'"
    let user = getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? "root"
    // The real client path: `openshell sandbox ssh-config` (the CLI next to this binary, registered with
    // this gateway in a scratch config home) and `ssh -F` that block: name mode, one CreateSshSession
    // and one `openshell ssh-proxy` process per connection.
    let cli = ((me as NSString).deletingLastPathComponent as NSString).appendingPathComponent("openshell")
    var cliEnv = ProcessInfo.processInfo.environment
    cliEnv["XDG_CONFIG_HOME"] = scratch + "/config"
    let alias = try writeSSHConfig(cli: cli, environment: cliEnv, scratch: scratch, port: port, pki: pki)
    // The cipher and key exchange the CLI's block asks for, given to the other two ssh runs as well.
    let block = try String(contentsOfFile: scratch + "/ssh_config", encoding: .utf8)
    var shared: [String] = []
    for line in block.split(separator: "\n") {
      let words = line.split(separator: " ", omittingEmptySubsequences: true)
      if words.count == 2, ["KexAlgorithms", "Ciphers"].contains(words[0]) { shared += ["-o", "\(words[0])=\(words[1])"] }
    }
    print("ssh options shared by all three: \(shared.isEmpty ? "(OpenSSH defaults)" : shared.joined(separator: " "))")
    func ssh(_ alias: String, _ proxy: String, _ login: String, _ command: String, stdin: SpawnIO = .null) throws -> Int32 {
      let args =
        [
          "-F", "/dev/null", "-i", scratch + "/id", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
          "-o", "UserKnownHostsFile=\(scratch)/known_hosts", "-o", "HostKeyAlias=\(alias)",
        ] + shared + ["-o", "ProxyCommand=\(proxy)", "\(login)@\(alias)", command]
      var env = ProcessInfo.processInfo.environment
      env[tokenVariable] = session.token
      let p = try Spawner.spawn("/usr/bin/ssh", args, environment: env, stdin: stdin, stdout: .null, stderr: .appendFile(scratch + "/ssh.err"))
      return Spawner.waitBlocking(p.pid)
    }
    func viaConfig(_ command: String, stdin: SpawnIO = .null) throws -> Int32 {
      let p = try Spawner.spawn(
        "/usr/bin/ssh", ["-F", scratch + "/ssh_config", "-o", "BatchMode=yes", alias, command], environment: cliEnv, stdin: stdin, stdout: .null,
        stderr: .appendFile(scratch + "/ssh.err"))
      return Spawner.waitBlocking(p.pid)
    }
    func timed(_ body: () throws -> Int32) throws -> Double {
      let t = ContinuousClock.now
      let code = try body()
      guard code == 0 else { throw RPCError(code: .internalError, message: "ssh exited \(code); see \(scratch)/ssh.err") }
      return (ContinuousClock.now - t).ms
    }
    var config: [Double] = []
    var tunnel: [Double] = []
    var local: [Double] = []
    for _ in 0..<connects {
      config.append(try timed { try viaConfig("true") })
      tunnel.append(try timed { try ssh("tunnel", tunnelProxy, "sandbox", "true") })
      local.append(try timed { try ssh("local", localProxy, user, "true") })
    }
    print("ssh connect (`ssh HOST true`, \(connects) each, alternating):")
    print(SandboxBench.summary("  `openshell sandbox ssh-config` block (ssh-proxy, name mode)", config))
    print(SandboxBench.summary("  gateway tunnel, minimal proxy, token", tunnel))
    print(SandboxBench.summary("  plain ssh to a local sshd -i (root)", local))
    // Throughput: a sparse file of zeros (ssh does not compress by default).
    let file = scratch + "/payload"
    let fd = open(file, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
    ftruncate(fd, off_t(megabytes) << 20)
    close(fd)
    func feed(_ alias: String, _ proxy: String, _ login: String) throws -> Double {
      let input = open(file, O_RDONLY)
      defer { close(input) }
      let ms = try timed { try ssh(alias, proxy, login, "cat > /dev/null", stdin: .fd(input)) }
      return Double(megabytes) / (ms / 1000)
    }
    var rates: [(Double, Double)] = []
    for _ in 0..<3 {
      let input = open(file, O_RDONLY)
      let ms = try timed { try viaConfig("cat > /dev/null", stdin: .fd(input)) }
      close(input)
      rates.append((Double(megabytes) / (ms / 1000), try feed("local", localProxy, user)))
    }
    let up = rates.map(\.0).sorted()[1]
    let base = rates.map(\.1).sorted()[1]
    print(
      String(
        format: "throughput up (%d MiB into `cat > /dev/null`, median of 3 alternating): ssh-config tunnel %.1f MiB/s, plain ssh %.1f MiB/s", megabytes, up,
        base))
    // The other direction: the remote side writes bytes that ssh copies to /dev/null (a download; the
    // sandbox may not open /dev/zero).
    let produce = "yes | head -c \(megabytes << 20)"
    var downRates: [(Double, Double)] = []
    for _ in 0..<3 {
      let tunnelMs = try timed { try viaConfig(produce) }
      let localMs = try timed { try ssh("local", localProxy, user, produce) }
      downRates.append((Double(megabytes) / (tunnelMs / 1000), Double(megabytes) / (localMs / 1000)))
    }
    let down = downRates.map(\.0).sorted()[1]
    let downBase = downRates.map(\.1).sorted()[1]
    print(
      String(
        format: "throughput down (`yes | head -c` %d MiB to /dev/null, median of 3 alternating): ssh-config tunnel %.1f MiB/s, plain ssh %.1f MiB/s", megabytes,
        down, downBase))
    // scp itself (OpenSSH 9: the SFTP protocol), both directions: the file to the far side's
    // /dev/null, and a file of the same size on the far side (the sandbox's /sandbox, the scratch
    // directory for plain ssh) to /dev/null here.
    guard try viaConfig("yes | head -c \(megabytes << 20) > /sandbox/scp-payload") == 0 else {
      throw RPCError(code: .internalError, message: "cannot write /sandbox/scp-payload; see \(scratch)/ssh.err")
    }
    func scpConfig(_ from: String, _ to: String) throws -> Int32 {
      let p = try Spawner.spawn(
        "/usr/bin/scp", ["-q", "-F", scratch + "/ssh_config", "-o", "BatchMode=yes", from, to], environment: cliEnv, stdin: .null, stdout: .null,
        stderr: .appendFile(scratch + "/ssh.err"))
      return Spawner.waitBlocking(p.pid)
    }
    func scpLocal(_ from: String, _ to: String) throws -> Int32 {
      let args =
        [
          "-q", "-F", "/dev/null", "-i", scratch + "/id", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
          "-o", "UserKnownHostsFile=\(scratch)/known_hosts", "-o", "HostKeyAlias=local",
        ] + shared + ["-o", "ProxyCommand=\(localProxy)", from, to]
      let p = try Spawner.spawn(
        "/usr/bin/scp", args, environment: ProcessInfo.processInfo.environment, stdin: .null, stdout: .null, stderr: .appendFile(scratch + "/ssh.err"))
      return Spawner.waitBlocking(p.pid)
    }
    var scpRates: [(up: Double, down: Double, baseUp: Double, baseDown: Double)] = []
    for _ in 0..<3 {
      let a = try timed { try scpConfig(file, "\(alias):/dev/null") }
      let b = try timed { try scpLocal(file, "\(user)@local:/dev/null") }
      let c = try timed { try scpConfig("\(alias):/sandbox/scp-payload", "/dev/null") }
      let d = try timed { try scpLocal("\(user)@local:\(file)", "/dev/null") }
      scpRates.append((Double(megabytes) / (a / 1000), Double(megabytes) / (c / 1000), Double(megabytes) / (b / 1000), Double(megabytes) / (d / 1000)))
    }
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    print(
      String(
        format:
          "scp %d MiB (median of 3 alternating): up ssh-config tunnel %.1f MiB/s, plain ssh %.1f MiB/s; down ssh-config tunnel %.1f MiB/s, plain ssh %.1f MiB/s",
        megabytes, median(scpRates.map(\.up)), median(scpRates.map(\.baseUp)), median(scpRates.map(\.down)), median(scpRates.map(\.baseDown))))
    _ = try viaConfig("rm -f /sandbox/scp-payload")

    // One keystroke's round trip (one byte into `cat` and back), through the tunnel, to a local sshd,
    // and through ExecSandboxInteractive.
    func sshArgv(_ alias: String, _ proxy: String, _ login: String, _ command: String) -> [String] {
      [
        "/usr/bin/ssh", "-F", "/dev/null", "-i", scratch + "/id", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=\(scratch)/known_hosts", "-o", "HostKeyAlias=\(alias)", "-o", "ProxyCommand=\(proxy)", "\(login)@\(alias)", command,
      ]
    }
    var env = ProcessInfo.processInfo.environment
    env[tokenVariable] = session.token
    let keys = 200
    let tunnelKeys = try LatencyBench.keystrokes(sshArgv("tunnel", tunnelProxy, "sandbox", "cat"), environment: env, count: keys)
    let localKeys = try LatencyBench.keystrokes(sshArgv("local", localProxy, user, "cat"), environment: env, count: keys)
    let execKeys = try await LatencyBench.interactiveExec(c, sandbox: "ssh-bench", count: keys)
    print("keystroke round trip (1 byte into `cat` and back, \(keys) each):")
    print(SandboxBench.summary("  ssh through the gateway tunnel", tunnelKeys))
    print(SandboxBench.summary("  plain ssh to a local sshd -i", localKeys))
    print(SandboxBench.summary("  ExecSandboxInteractive", execKeys))

    // One HTTP request to a python http.server on the sandbox's loopback: through its exposed-service URL
    // (TLS with a client certificate, a new connection per request), through `ssh -L` over the tunnel
    // (what `openshell forward` runs), and to the same server on the host's loopback directly.
    let servicePort = 18_000 + Int.random(in: 0..<2000)
    try await LatencyBench.exec(
      c, sandbox: "ssh-bench",
      ["sh", "-c", "echo ok > /sandbox/index.html; cd /sandbox && setsid python3 -m http.server \(servicePort) --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &"])
    let exposed = try await c.exposeService(
      .with {
        $0.sandbox = "ssh-bench"; $0.workspaceScope = ws; $0.targetPort = UInt32(servicePort)
      })
    let tls = ["--cacert", pki.caCertificatePath, "--cert", pki.clientCertificatePath, "--key", pki.clientKeyPath]
    try await LatencyBench.waitFor(exposed.url + "index.html", extra: tls)
    let requests = 100
    let viaService = try LatencyBench.curl(Array(repeating: exposed.url + "index.html", count: requests), extra: tls)
    let forwardPort = servicePort + 2000
    let forward = try Spawner.spawn(
      "/usr/bin/ssh",
      Array(sshArgv("tunnel", tunnelProxy, "sandbox", "").dropFirst().dropLast()) + ["-N", "-L", "127.0.0.1:\(forwardPort):127.0.0.1:\(servicePort)"],
      environment: env, stdin: .null, stdout: .null, stderr: .null)
    defer {
      kill(forward.pid, SIGTERM)
      _ = Spawner.waitBlocking(forward.pid)
    }
    try await LatencyBench.waitFor("http://127.0.0.1:\(forwardPort)/index.html", extra: [])
    let viaForward = try LatencyBench.curl(Array(repeating: "http://127.0.0.1:\(forwardPort)/index.html", count: requests), extra: [])
    try "ok\n".write(toFile: scratch + "/index.html", atomically: true, encoding: .utf8)
    let directPort = forwardPort + 1
    let direct = try LatencyBench.hostServer(port: directPort, directory: scratch)
    defer {
      kill(direct, SIGTERM)
      _ = Spawner.waitBlocking(direct)
    }
    try await LatencyBench.waitFor("http://127.0.0.1:\(directPort)/index.html", extra: [])
    let viaDirect = try LatencyBench.curl(Array(repeating: "http://127.0.0.1:\(directPort)/index.html", count: requests), extra: [])
    print("HTTP GET of a small file from a python http.server (\(requests) each, one curl process):")
    print(SandboxBench.summary("  exposed service URL (TLS + client cert, new connection each)", viaService))
    print(SandboxBench.summary("  ssh -L through the gateway tunnel (openshell forward)", viaForward))
    print(SandboxBench.summary("  the same server on the host loopback, direct", viaDirect))
    _ = try await c.deleteSandbox(
      .with {
        $0.name = "ssh-bench"; $0.workspaceScope = ws
      })
  }

  /// Registers the gateway for the CLI in `environment`'s config home (mTLS files of the bench's PKI),
  /// runs `openshell sandbox ssh-config ssh-bench` into `scratch/ssh_config`; returns the host alias.
  static func writeSSHConfig(cli: String, environment: [String: String], scratch: String, port: Int, pki: GatewayPKI) throws -> String {
    let gw = scratch + "/config/openshell/gateways/bench"
    try FileManager.default.createDirectory(atPath: gw + "/mtls", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let meta = #"{"name":"bench","gateway_endpoint":"https://127.0.0.1:\#(port)","is_remote":false,"gateway_port":\#(port),"auth_mode":"mtls","type":"remote"}"#
    try meta.write(toFile: gw + "/metadata.json", atomically: true, encoding: .utf8)
    for (from, to) in [(pki.caCertificatePath, "ca.crt"), (pki.clientCertificatePath, "tls.crt"), (pki.clientKeyPath, "tls.key")] {
      try? FileManager.default.removeItem(atPath: gw + "/mtls/" + to)
      try FileManager.default.copyItem(atPath: from, toPath: gw + "/mtls/" + to)
    }
    let p = try Spawner.spawn(
      cli, ["-g", "bench", "sandbox", "ssh-config", "ssh-bench"], environment: environment, stdout: .pipe, stderr: .appendFile(scratch + "/cli.err"))
    var out = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while case let n = read(p.stdout!, &buffer, buffer.count), n > 0 { out.append(contentsOf: buffer[0..<n]) }
    close(p.stdout!)
    guard Spawner.waitBlocking(p.pid) == 0, let text = String(data: out, encoding: .utf8), text.hasPrefix("Host ") else {
      throw RPCError(code: .internalError, message: "openshell sandbox ssh-config failed; see \(scratch)/cli.err")
    }
    try text.write(toFile: scratch + "/ssh_config", atomically: true, encoding: .utf8)
    return String(text.split(separator: "\n")[0].dropFirst(5))
  }

  /// The `ProxyCommand` side: ForwardTcp with the token from the environment, stdin/stdout bridged.
  static func proxy(port: Int, sandboxID: String, cert: String, key: String, ca: String) async throws -> Never {
    let token = ProcessInfo.processInfo.environment[tokenVariable] ?? ""
    let security = HTTP2ClientTransport.Posix.TransportSecurity.mTLS(
      certificateChain: [.file(path: cert, format: .pem)], privateKey: .file(path: key, format: .pem)
    ) { $0.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
    let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: security)
    try await withGRPCClient(transport: transport) { grpc in
      let c = Openshell_V1_OpenShell.Client(wrapping: grpc)
      try await c.forwardTcp(
        request: StreamingClientRequest { writer in
          try await writer.write(
            .with {
              $0.init_p = .with {
                $0.sandbox = sandboxID; $0.ssh = .init(); $0.authorizationToken = token
              }
            })
          // stdin is read at most 16 × 64 KiB ahead of what gRPC accepted (bounded; the gateway's
          // flow control then holds `ssh` itself).
          let input = BoundedPipeReader(fd: 0)
          for await chunk in input.chunks {
            try await writer.write(.with { $0.data = chunk })
            input.consumed()
          }
        }
      ) { response in
        for try await frame in response.messages {
          guard case .data(let d)? = frame.payload else { continue }
          d.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
              let n = write(1, raw.baseAddress! + offset, raw.count - offset)
              if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { exit(0) }
            }
          }
        }
      }
      exit(0)
    }
    exit(0)
  }
}
