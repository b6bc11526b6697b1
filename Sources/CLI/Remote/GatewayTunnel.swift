import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// The CLI-managed SSH tunnel of a remote gateway ("mTLS over SSH tunnel", seed: Authentication).
///
/// A background `ssh -N -L 127.0.0.1:<local>:127.0.0.1:<port> <destination>` (its own session, so it
/// outlives the command that started it) carries the unchanged mTLS connection: the registration's
/// endpoint is `https://127.0.0.1:<local>` (the gateway's server certificate always names 127.0.0.1),
/// so the CLI and the Python SDK use it like any other endpoint. Its pid and log are
/// `$XDG_STATE_HOME/openshell/tunnels/<name>.{pid,log}`. Every CLI command that resolves the gateway
/// restarts a dead tunnel (``ensure(_:)``); `gateway stop` and `destroy` end it. The tunnel
/// authenticates without prompts (`BatchMode`): the key must be in ssh-agent or have no passphrase.
enum GatewayTunnel {
  static var directory: URL { LocalGateway.stateRoot.appendingPathComponent("tunnels") }
  static func pidFile(_ name: String) -> URL { directory.appendingPathComponent(ClientRegistry.sanitize(name) + ".pid") }
  static func logFile(_ name: String) -> URL { directory.appendingPathComponent(ClientRegistry.sanitize(name) + ".log") }

  /// The tunnel's pid when it runs (an `ssh` process forwarding `local`).
  static func runningPID(_ name: String, local: Int) -> Int32? {
    guard let s = try? String(contentsOf: pidFile(name), encoding: .utf8), let pid = Int32(s.trimmingCharacters(in: .whitespacesAndNewlines)),
      ProcessTable.isAlive(pid), let args = ProcessTable.commandLine(pid), args.first.map({ ($0 as NSString).lastPathComponent }) == "ssh",
      args.contains(where: { $0.hasPrefix("127.0.0.1:\(local):") })
    else { return nil }
    return pid
  }

  /// Starts the tunnel for `ssh` (replacing a stale one) and waits until `local` accepts connections.
  /// - Throws: `CLIError` with ssh's reason when the forward cannot be set up within `timeout` seconds.
  static func start(name: String, ssh: SSHConnection, local: Int, remotePort: Int, timeout: Double = 30) throws {
    stop(name, local: local)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let log = logFile(name).path
    try? FileManager.default.removeItem(atPath: log)
    let child: SpawnedProcess
    do {
      child = try Spawner.spawn(
        "ssh", ssh.forwardArguments(local: local, remotePort: remotePort), environment: ProcessInfo.processInfo.environment,
        stdin: .null, stdout: .appendFile(log), stderr: .appendFile(log), newSession: true, searchPath: true)
    } catch {
      throw CLIError("ssh (the OpenSSH client) cannot be started: \(error); install it: apt-get install openssh-client")
    }
    try writeFile(pidFile(name), Data("\(child.pid)\n".utf8), mode: 0o600)
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
      if let status = Spawner.poll(child.pid) {
        try? FileManager.default.removeItem(at: pidFile(name))
        let err = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        if err.contains("Address already in use") || err.contains("cannot listen to port") {
          throw CLIError(
            "step 'ssh tunnel' failed: local port \(local) is taken (\(SSHConnection.lastLine(err) ?? "")); run the command again to pick another port")
        }
        throw CLIError(
          SSHConnection.describeFailure(err, status: status, destination: ssh.destination).replacingOccurrences(
            of: "step 'ssh connection'", with: "step 'ssh tunnel'"))
      }
      if accepts(local) { return }
      usleep(50_000)
    }
    stop(name, local: local)
    throw CLIError("step 'ssh tunnel' failed: 127.0.0.1:\(local) did not open within \(Int(timeout)) s; see \(log)")
  }

  /// Ends the tunnel of `name` (if it runs) and removes its pid file.
  static func stop(_ name: String, local: Int?) {
    if let local, let pid = runningPID(name, local: local) {
      kill(pid, SIGTERM)
      for _ in 0..<100 where ProcessTable.isAlive(pid) {
        _ = ProcessTable.reap(pid)
        usleep(20_000)
      }
    }
    try? FileManager.default.removeItem(at: pidFile(name))
  }

  /// For a tunnelled registration: restarts the tunnel when it is not running (a reboot, a network
  /// change that ended ssh). Other registrations are left alone.
  /// - Throws: `CLIError` when the tunnel cannot be started.
  static func ensure(_ meta: GatewayMetadata) throws {
    guard let s = meta.ssh, s.tunnel, let local = s.tunnel_local_port else { return }
    if runningPID(meta.name, local: local) != nil, accepts(local) { return }
    // Concurrent commands (two CLIs, the SDK's user running scripts) restart it once: the first holds
    // `tunnels/<name>.lock`, the others wait and then find it running.
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let lockPath = directory.appendingPathComponent(ClientRegistry.sanitize(meta.name) + ".lock").path
    let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw CLIError("cannot open \(lockPath): \(errnoString())") }
    defer { Glibc.close(fd) }
    _ = flock(fd, LOCK_EX)
    if runningPID(meta.name, local: local) != nil, accepts(local) { return }
    let ssh = try SSHConnection(destination: s.destination, identityFile: s.identity_file, configFile: s.config_file)
    do {
      try start(name: meta.name, ssh: ssh, local: local, remotePort: meta.gateway_port)
    } catch let e as CLIError {
      throw CLIError("gateway '\(meta.name)' is reached through an SSH tunnel, which is down and cannot be restarted: \(e.message)")
    }
  }

  /// True when something accepts TCP connections on 127.0.0.1:`port`.
  static func accepts(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { Glibc.close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = in_port_t(UInt16(port)).bigEndian
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &a) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
  }

  /// A free local port for a new tunnel (bound once to port 0 and released).
  static func freeLocalPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    defer { Glibc.close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: a.sin_port))
  }
}
