import Crypto
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Starting, waiting for, registering and stopping local gateway daemons.
enum DaemonControl {
  /// Fails with one line naming the port (and its holder when known) unless `port` can be bound.
  static func ensurePortFree(_ port: Int, bind: String) throws {
    guard let error = ProcessTable.bindError(port, host: bind == "0.0.0.0" ? "0.0.0.0" : bind) else { return }
    if error == EADDRNOTAVAIL {
      throw CLIError("cannot listen on \(bind): it is not an address of this machine (use 127.0.0.1, 0.0.0.0 or one of its addresses)")
    }
    if let pid = ProcessTable.listener(port: port) {
      throw CLIError("port \(port) is already in use by \(ProcessTable.describe(pid)); stop that process or choose another port with --port")
    }
    throw CLIError("port \(port) is already in use (by a process this user cannot inspect); choose another port with --port")
  }

  /// Launches `openshell gateway serve` for `gw` in the background and records its pid.
  static func launch(_ gw: LocalGateway, _ c: LaunchConfig) throws -> Int32 {
    var args = ["gateway", "serve", "--data-dir", gw.dataDir.path, "--port", String(c.port), "--bind", c.bind, "--name", c.name]
    switch c.authMode {
    case "plaintext": args.append("--plaintext")
    case "tls": args.append("--disable-gateway-auth")
    default: break
    }
    for h in c.gatewayHosts { args += ["--gateway-host", h] }
    if let issuer = c.oidcIssuer {
      args += ["--oidc-issuer", issuer, "--oidc-audience", c.oidcAudience ?? ""]
      if let id = c.oidcClientID { args += ["--oidc-client-id", id] }
      if let sc = c.oidcScopes { args += ["--oidc-scopes", sc] }
    }
    var env = ProcessInfo.processInfo.environment
    env.removeValue(forKey: "OPENSHELL_REGISTRY_TOKEN")
    env.removeValue(forKey: "OPENSHELL_REGISTRY_USERNAME")
    let header = "\n--- \(iso8601(Date())) openshell gateway start: \(c.name) on \(c.bind):\(c.port) (\(c.authMode)) ---\n"
    if let h = FileHandle(forWritingAtPath: gw.logFile.path)
      ?? {
        FileManager.default.createFile(atPath: gw.logFile.path, contents: nil, attributes: [.posixPermissions: 0o600])
        return FileHandle(forWritingAtPath: gw.logFile.path)
      }()
    {
      h.seekToEndOfFile()
      h.write(Data(header.utf8))
      try? h.close()
    }
    let pid = try ProcessTable.spawnDaemon(
      executable: ProcessTable.selfExecutable, arguments: args, environment: env,
      logPath: gw.logFile.path, workingDirectory: gw.dataDir.path)
    try writeFile(gw.pidFile, Data("\(pid)\n".utf8), mode: 0o644)
    return pid
  }

  /// A target for the daemon's own PKI (the operator certificate).
  static func localTarget(_ gw: LocalGateway, _ c: LaunchConfig) throws -> Target {
    var t = try Target(name: gw.name, endpoint: c.endpoint, authMode: c.authMode, mtlsDir: nil)
    t.host = c.bind == "0.0.0.0" || c.bind == "::" ? "127.0.0.1" : c.bind
    if t.tls {
      t.caPath = gw.pki("ca.crt")
      t.certPath = gw.pki("client.crt")
      t.keyPath = gw.pki("client.key")
    }
    return t
  }

  /// Polls `/healthz` until the daemon answers, it exits, or `timeout` passes; prints a progress line.
  static func waitHealthy(_ gw: LocalGateway, _ c: LaunchConfig, pid: Int32, timeout: Double = 60) async throws {
    let start = Date()
    let tty = stdoutIsTerminal
    print(tty ? "" : "Waiting for gateway \(gw.name) to become healthy on \(c.endpoint)...", terminator: tty ? "" : "\n")
    defer { if tty { print("") } }
    while Date().timeIntervalSince(start) < timeout {
      if tty {
        print("\r\(Style.dim("…")) Waiting for gateway \(gw.name) to become healthy (\(Int(Date().timeIntervalSince(start))) s)", terminator: "")
        fflush(nil)
      }
      if let code = ProcessTable.reap(pid) {
        throw CLIError("gateway \(gw.name) exited with code \(code) during start-up: \(lastError(gw) ?? "see \(gw.logFile.path)")")
      }
      if !ProcessTable.isAlive(pid) {
        throw CLIError("gateway \(gw.name) exited during start-up: \(lastError(gw) ?? "see \(gw.logFile.path)")")
      }
      if c.authMode == "plaintext" || FileManager.default.fileExists(atPath: gw.pki("client.key")) {
        if let t = try? localTarget(gw, c), let r = try? await HTTPProbe.get(t, path: "/healthz", timeout: .seconds(2)), r.status == 200 {
          if !tty { print("Gateway \(gw.name) ready.") }
          return
        }
      }
      try await Task.sleep(for: .milliseconds(150))
    }
    throw CLIError("gateway \(gw.name) did not become healthy within \(Int(timeout)) s; see \(gw.logFile.path) or run: openshell doctor logs --name \(gw.name)")
  }

  /// The last `error:` line the daemon wrote during the latest start (after the newest `--- … openshell
  /// gateway start: …` header that ``launch`` writes), else that start's last line; nil when it wrote nothing.
  /// An earlier start's error is never reported for this one (issue 17).
  static func lastError(_ gw: LocalGateway) -> String? {
    guard let text = try? String(contentsOf: gw.logFile, encoding: .utf8) else { return nil }
    return lastError(inLog: text)
  }

  /// ``lastError(_:)`` over the daemon log's text.
  static func lastError(inLog text: String) -> String? {
    let all = text.split(separator: "\n")
    let start = all.lastIndex(where: { $0.hasPrefix("--- ") && $0.contains(" openshell gateway start: ") }).map { $0 + 1 } ?? all.startIndex
    let lines = all[start...]
    if let e = lines.last(where: { $0.hasPrefix("error:") }) { return String(e.dropFirst(6)).trimmingCharacters(in: .whitespaces) }
    return lines.last.map(String.init)
  }

  /// Writes (atomically replaces) the registration of a local gateway from its data dir's PKI.
  static func register(_ gw: LocalGateway, _ c: LaunchConfig, registry: ClientRegistry = .default) throws -> GatewayMetadata {
    var bundle = ClientRegistry.Bundle()
    var fingerprint: String?
    if c.authMode != "plaintext" {
      func read(_ f: String) throws -> String {
        guard let s = try? String(contentsOfFile: gw.pki(f), encoding: .utf8) else { throw CLIError("missing \(gw.pki(f))") }
        return s
      }
      bundle.ca = try read("ca.crt")
      bundle.cert = try read("client.crt")
      bundle.key = try read("client.key")
      fingerprint = try CertInfo(pem: bundle.ca!).fingerprint
    }
    let old = registry.metadata(gw.name)
    let now = iso8601(Date())
    let meta = GatewayMetadata(
      name: gw.name, gateway_endpoint: c.endpoint, is_remote: false, gateway_port: c.port, auth_mode: c.authMode,
      type: "local", remote_host: nil, resolved_host: nil, data_dir: gw.dataDir.path, ca_fingerprint: fingerprint,
      bind_address: c.bind, gpu: c.gpu, registry_username: c.registryUsername,
      registry_token_sha256: c.registryTokenSHA256, created_at: old?.created_at ?? now, updated_at: now)
    try registry.write(meta, bundle: bundle)
    return meta
  }

  /// True when the registration's CA and endpoint match the daemon's data dir.
  static func registrationCurrent(_ gw: LocalGateway, _ c: LaunchConfig, registry: ClientRegistry = .default) -> Bool {
    guard let m = registry.metadata(gw.name), m.gateway_endpoint == c.endpoint, m.auth_mode == c.authMode else { return false }
    if c.authMode == "plaintext" { return true }
    guard let ca = try? CertInfo.load(gw.pki("ca.crt")),
      let stored = try? CertInfo.load(registry.mtlsDir(gw.name).appendingPathComponent("ca.crt").path)
    else { return false }
    return ca.fingerprint == stored.fingerprint
      && FileManager.default.fileExists(atPath: registry.mtlsDir(gw.name).appendingPathComponent("tls.key").path)
  }

  /// Stops the daemon (SIGTERM, then SIGKILL after `timeout`); removes the pid file.
  static func stop(_ gw: LocalGateway, timeout: Double = 20) -> (wasRunning: Bool, killed: Bool) {
    guard let pid = gw.runningPID else {
      gw.removePIDFile()
      return (false, false)
    }
    let killed = ProcessTable.terminate(pid, timeout: timeout)
    gw.removePIDFile()
    return (true, killed)
  }

  static func sha256Hex(_ s: String) -> String {
    SHA256.hash(data: Data(s.utf8)).map { String(format: "%02x", $0) }.joined()
  }
}
