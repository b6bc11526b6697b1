import EventLog
import Foundation
import Gateway
import LogTools

#if canImport(Glibc)
  import Glibc
#endif

/// How a local gateway daemon is launched; stored as `gateway.json` in its data directory so that a
/// resume uses the same port, mode and hosts.
struct LaunchConfig: Codable, Equatable {
  var name: String
  var port: Int
  var bind: String
  /// `mtls` | `tls` | `plaintext`
  var authMode: String
  var gatewayHosts: [String]
  var gpu: Bool
  var registryUsername: String?
  /// Only the SHA-256 of the registry token; the token is passed to the daemon in its environment.
  var registryTokenSHA256: String?
  /// OIDC bearer tokens (`--oidc-*` of `gateway start`, issue 13), kept so that a resume never starts the
  /// gateway without the authentication it had.
  var oidcIssuer: String?
  var oidcAudience: String?
  var oidcClientID: String?
  var oidcScopes: String?

  /// Host clients dial: the first `--gateway-host`, else 127.0.0.1 (or the bind address if specific).
  var advertisedHost: String {
    if let h = gatewayHosts.first { return h }
    if bind != "0.0.0.0" && bind != "::" && !bind.isEmpty { return bind }
    return "127.0.0.1"
  }
  var endpoint: String {
    let host = advertisedHost.contains(":") ? "[\(advertisedHost)]" : advertisedHost
    return "\(authMode == "plaintext" ? "http" : "https")://\(host):\(port)"
  }
}

/// A local gateway's files under `$XDG_STATE_HOME/openshell/gateways/<name>/` (the daemon's data dir):
/// `log/` (event log), `pki/`, `gateway.json` (launch config), `gateway.pid`, `gateway.log` (daemon
/// stdout/stderr). Archives go to `$XDG_STATE_HOME/openshell/archive/<name>/<UTC timestamp>/`.
struct LocalGateway {
  let name: String
  let dataDir: URL

  static func stateHome() -> URL { UserDirectories.stateHome }
  static var stateRoot: URL { stateHome().appendingPathComponent("openshell") }

  init(name: String, dataDir: URL? = nil) {
    self.name = name
    self.dataDir = dataDir ?? Self.stateRoot.appendingPathComponent("gateways").appendingPathComponent(ClientRegistry.sanitize(name))
  }

  /// The local gateway of a registration (its `data_dir`), or the default location for the name.
  init(metadata: GatewayMetadata) {
    self.init(name: metadata.name, dataDir: metadata.data_dir.map { URL(fileURLWithPath: $0) })
  }

  /// The name of the gateway that owns this data dir (from its launch config `gateway.json`), nil when
  /// unknown. A registration made with `gateway add --local` points at another gateway's data dir: its
  /// owner then differs from `name`, and lifecycle commands must leave that gateway alone.
  var owner: String? { launchConfig?.name }

  /// Whether registration `m` was made by `gateway add` for a gateway that is not this machine's gateway
  /// of the same name (another local gateway's data dir, or a bare loopback endpoint): lifecycle commands
  /// for that name must act on the gateway it points to, never deploy a new one over the registration.
  static func isRegistrationOfAnother(_ m: GatewayMetadata) -> Bool {
    m.type == "local" && m.data_dir != LocalGateway(name: m.name).dataDir.path
  }

  /// The command that starts the gateway behind registration `name` (the owner's name for a
  /// `gateway add --local` registration), or nil when nothing on this machine can start it.
  static func startCommand(registration name: String) -> String? {
    guard let m = ClientRegistry.default.metadata(name) else { return "openshell gateway start --name \(name)" }
    guard m.type == "local" else { return nil }
    guard isRegistrationOfAnother(m) else { return "openshell gateway start --name \(name)" }
    return LocalGateway(metadata: m).owner.map { "openshell gateway start --name \($0)" }
  }

  var archiveRoot: URL { Self.stateRoot.appendingPathComponent("archive").appendingPathComponent(ClientRegistry.sanitize(name)) }
  var pidFile: URL { dataDir.appendingPathComponent("gateway.pid") }
  var logFile: URL { dataDir.appendingPathComponent("gateway.log") }
  var configFile: URL { dataDir.appendingPathComponent("gateway.json") }
  var logDir: URL { dataDir.appendingPathComponent("log") }
  var pkiDir: URL { dataDir.appendingPathComponent("pki") }
  func pki(_ file: String) -> String { pkiDir.appendingPathComponent(file).path }

  var exists: Bool { FileManager.default.fileExists(atPath: dataDir.path) }
  var hasLog: Bool { FileManager.default.fileExists(atPath: logDir.appendingPathComponent("data.mdb").path) }

  var launchConfig: LaunchConfig? {
    guard let data = try? Data(contentsOf: configFile) else { return nil }
    return try? JSONDecoder().decode(LaunchConfig.self, from: data)
  }

  func saveLaunchConfig(_ c: LaunchConfig) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    try writeFile(configFile, enc.encode(c), mode: 0o600)
  }

  // MARK: process state

  enum ProcessState: Equatable {
    case running(pid: Int32)
    /// A pid file naming a process that is gone or is not this gateway.
    case stale(pid: Int32)
    case stopped
  }

  var recordedPID: Int32? {
    guard let s = try? String(contentsOf: pidFile, encoding: .utf8) else { return nil }
    return Int32(s.trimmingCharacters(in: .whitespacesAndNewlines))
  }

  var processState: ProcessState {
    guard let pid = recordedPID else { return .stopped }
    return isOurDaemon(pid) ? .running(pid: pid) : .stale(pid: pid)
  }

  /// The running daemon: the one the pid file names, else the daemon holding the log's writer lock (the
  /// pid file can be missing or wrong, e.g. removed by hand).
  var runningPID: Int32? {
    if case .running(let pid) = processState { return pid }
    if let pid = logWriterPID, pid > 0, isOurDaemon(pid) { return pid }
    return nil
  }

  /// True when `pid` is alive (not a zombie) and is `openshell gateway serve --data-dir <ours>`.
  func isOurDaemon(_ pid: Int32) -> Bool {
    guard ProcessTable.isAlive(pid) else { return false }
    guard let args = ProcessTable.commandLine(pid) else { return false }
    guard args.contains("serve"), let i = args.firstIndex(of: "--data-dir"), i + 1 < args.count else { return false }
    return URL(fileURLWithPath: args[i + 1]).standardizedFileURL.path == dataDir.standardizedFileURL.path
  }

  func removePIDFile() { try? FileManager.default.removeItem(at: pidFile) }

  /// The pid of a process holding the event log's writer lock (`log/writer.lock`, see EventLog), i.e. a
  /// live gateway daemon using this data dir, whatever its pid file says; nil when the log is not in use.
  var logWriterPID: Int32? { EventLog.writerPID(directory: logDir.path) }

  /// Runs `body` holding this gateway's lifecycle lock: an exclusive flock(2) on
  /// `$XDG_STATE_HOME/openshell/locks/<name>.lock`, outside the data dir (which `--recreate` and `destroy`
  /// move). `gateway start`, `stop` and `destroy` of one gateway thus run one at a time: a second
  /// concurrent `start` waits and then finds the gateway running, instead of racing the first one.
  /// - Throws: `CLIError` when the lock cannot be had within `timeout` seconds.
  func withLifecycleLock<T>(timeout: Double = 180, _ body: () async throws -> T) async throws -> T {
    let dir = Self.stateRoot.appendingPathComponent("locks")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let path = dir.appendingPathComponent(ClientRegistry.sanitize(name) + ".lock").path
    let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw CLIError("cannot open \(path): \(errnoString())") }
    defer { close(fd) }
    if flock(fd, LOCK_EX | LOCK_NB) != 0 {
      guard errno == EWOULDBLOCK else { throw CLIError("cannot lock \(path): \(errnoString())") }
      printErr("• Waiting for another openshell command on gateway \(name) to finish...")
      let deadline = Date().addingTimeInterval(timeout)
      while flock(fd, LOCK_EX | LOCK_NB) != 0 {
        guard Date() < deadline else {
          throw CLIError("another openshell command has held gateway '\(name)' for \(Int(timeout)) s (lock \(path)); try again when it has finished")
        }
        try await Task.sleep(for: .milliseconds(100))
      }
    }
    return try await body()
  }

  /// Moves the whole data dir to `archive/<name>/<UTC timestamp>/` and returns the new location.
  /// - Throws: `CLIError` when a live daemon still uses the data dir (its log is locked), or the move fails.
  func archive(suffix: String = "") throws -> URL {
    let fm = FileManager.default
    if let pid = logWriterPID {
      throw CLIError("gateway '\(name)' is still running (\(pid > 0 ? "pid \(pid)" : "its log is in use")); its data dir \(dataDir.path) was left in place")
    }
    // A retired gateway never comes back for its sandboxes: end their processes first.
    let ended = SandboxReaper.terminateAll(dataDirectory: dataDir.path)
    if ended > 0 { printErr("Stopped \(ended) sandbox process(es) of the archived gateway") }
    try fm.createDirectory(at: archiveRoot, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    var dest = archiveRoot.appendingPathComponent(utcStamp() + suffix)
    var n = 1
    while fm.fileExists(atPath: dest.path) {
      n += 1
      dest = archiveRoot.appendingPathComponent("\(utcStamp())\(suffix)-\(n)")
    }
    guard rename(dataDir.path, dest.path) == 0 else {
      throw CLIError("cannot archive \(dataDir.path) to \(dest.path): \(errnoString())")
    }
    try? fm.removeItem(at: dest.appendingPathComponent("gateway.pid"))
    return dest
  }

  /// The gateway's environment for `doctor exec` and the daemon.
  func environment(endpoint: String?) -> [String: String] {
    var env: [String: String] = [
      "OPENSHELL_GATEWAY": name,
      "OPENSHELL_DATA_DIR": dataDir.path,
      "OPENSHELL_LOG_DIR": logDir.path,
      "OPENSHELL_PKI_DIR": pkiDir.path,
      "OPENSHELL_GATEWAY_LOG": logFile.path,
      "OPENSHELL_CA_CERT": pki("ca.crt"),
      "OPENSHELL_CLIENT_CERT": pki("client.crt"),
      "OPENSHELL_CLIENT_KEY": pki("client.key"),
      "OPENSHELL_SERVER_CERT": pki("server.crt"),
      "OPENSHELL_SERVER_KEY": pki("server.key"),
    ]
    if let endpoint { env["OPENSHELL_GATEWAY_ENDPOINT"] = endpoint }
    if let c = launchConfig { env["OPENSHELL_GATEWAY_PORT"] = String(c.port) }
    if let pid = runningPID { env["OPENSHELL_GATEWAY_PID"] = String(pid) }
    return env
  }
}
