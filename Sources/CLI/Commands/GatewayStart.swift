import ArgumentParser
import Foundation
import Gateway

/// `openshell gateway start`: deploy-or-resume a local gateway daemon and register it.
struct GatewayStart: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "start",
    abstract: "Start (or resume) a local gateway in the background and make it the active gateway.",
    discussion: """
      Data, PKI, daemon log and pid file live in $XDG_STATE_HOME/openshell/gateways/<name>/. A stopped gateway \
      resumes with the same data, certificates and port. --recreate moves the old data dir to \
      $XDG_STATE_HOME/openshell/archive/<name>/<UTC timestamp>/ (never deletes it) and starts a fresh gateway.

      --remote user@host deploys the gateway on another machine over SSH (the system ssh client, ~/.ssh/config; \
      $OPENSHELL_SSH_CONFIG names another config file): our binaries go to ~/.local/share/openshell/remote/<version>/ \
      of the SSH user (copied when that version is missing), the gateway runs there as that user (data in its \
      ~/.local/state/openshell/gateways/<name>/), and the endpoint is https://<host>:<port>. When that port cannot \
      be reached from here, or with --tunnel, the CLI carries mTLS through a managed `ssh -L` tunnel instead \
      (endpoint https://127.0.0.1:<local port>; --tunnel also keeps the gateway off the host's network).
      """)

  @OptionGroup var global: GatewayOptions
  @Option(help: "Gateway name (default: -g, $OPENSHELL_GATEWAY, else 'openshell').") var name: String?
  @Option(help: "Port for gRPC and HTTP (default: the stored port, else 8080).") var port: Int?
  @Option(help: "Host name or IP clients use to reach the gateway (repeatable; the first one goes into the endpoint).")
  var gatewayHost: [String] = []
  @Option(help: "Listen address (default 127.0.0.1).") var bind: String?
  @Flag(help: "Archive the existing data dir and start a fresh gateway (new CA, empty log).") var recreate = false
  @Flag(help: "With --recreate: end the old gateway's running sandboxes without asking.") var yes = false
  @Flag(help: "Listen on plain HTTP (only behind a TLS-terminating proxy).") var plaintext = false
  @Flag(help: "TLS without client certificate checks.") var disableGatewayAuth = false
  @Flag(help: "GPU passthrough (OpenShell's flag; refused: not supported yet).") var gpu = false
  @Option(help: "Container registry user name (OpenShell's flag; refused: no image-pulling driver yet).")
  var registryUsername: String?
  @Option(help: "Container registry token (OpenShell's flag; refused: no image-pulling driver yet).")
  var registryToken: String?
  @Option(help: "Rebuild the (stopped) gateway's state from an archived data dir, log dir or exported archive first.")
  var restoreFrom: String?
  @Option(help: "Seconds to wait for the gateway to become healthy.") var timeout: Double = 60
  @Option(help: "Accept OIDC bearer tokens from this issuer (env OPENSHELL_OIDC_ISSUER; kept for later starts).") var oidcIssuer: String?
  @Option(help: "Audience every bearer token must carry (env OPENSHELL_OIDC_AUDIENCE).") var oidcAudience: String?
  @Option(help: "Public client id the CLI logs in with (env OPENSHELL_OIDC_CLIENT_ID).") var oidcClientId: String?
  @Option(help: "Scopes the CLI requests (env OPENSHELL_OIDC_SCOPES).") var oidcScopes: String?
  @Option(help: "Deploy on this SSH destination (user@host or a ~/.ssh/config alias) instead of this machine.")
  var remote: String?
  @Option(help: "SSH private key for --remote (default: ssh's own choice: agent, ~/.ssh/config, default keys).")
  var sshKey: String?
  @Flag(help: "With --remote: listen on the host's loopback only and reach it through an SSH tunnel managed by the CLI.")
  var tunnel = false

  func validate() throws {
    if let port, !(1...65535).contains(port) { throw ValidationError("--port must be 1-65535, got \(port)") }
    if plaintext && disableGatewayAuth { throw ValidationError("--plaintext and --disable-gateway-auth cannot be combined") }
    if recreate && restoreFrom != nil { throw ValidationError("--recreate and --restore-from cannot be combined") }
    if remote != nil {
      if plaintext || disableGatewayAuth {
        throw ValidationError("--remote gateways use mTLS; --plaintext and --disable-gateway-auth cannot be combined with it")
      }
      if bind != nil { throw ValidationError("--bind cannot be combined with --remote (the host listens on 0.0.0.0, or 127.0.0.1 with --tunnel)") }
      if restoreFrom != nil { throw ValidationError("--restore-from cannot be combined with --remote") }
      if oidcIssuer != nil || oidcAudience != nil || oidcClientId != nil || oidcScopes != nil {
        throw ValidationError(
          "--oidc-* options are not supported with --remote yet: start the gateway on the host with them (openshell gateway start --oidc-issuer …) and add it with openshell gateway add https://…"
        )
      }
    }
    for h in gatewayHost where h.isEmpty || h.contains(where: { $0.isWhitespace || $0 == "/" }) {
      throw ValidationError("invalid --gateway-host '\(h)'")
    }
  }

  func run() async throws {
    try await cliRun {
      let name = global.name(self.name, useActive: false)
      try ClientRegistry.validateName(name)
      try await LocalGateway(name: name).withLifecycleLock { try await start() }
    }
  }

  private func start() async throws {
    let env = ProcessInfo.processInfo.environment
    let name = global.name(self.name, useActive: false)
    try ClientRegistry.validateName(name)
    let registry = ClientRegistry.default
    try registry.prepare()
    if remote != nil || registry.metadata(name)?.ssh != nil {
      if plaintext || disableGatewayAuth || bind != nil || restoreFrom != nil {
        throw CLIError(
          "gateway '\(name)' runs on \(registry.metadata(name)?.remote_host ?? "a remote host"); --plaintext, --disable-gateway-auth, --bind and --restore-from do not apply to it"
        )
      }
      try Unsupported.check(gpu: gpu, registryUsername: registryUsername, registryToken: registryToken)
      try await RemoteGateway.start(
        .init(
          name: name, destination: remote, sshKey: sshKey, port: port, gatewayHosts: gatewayHost, recreate: recreate, yes: yes,
          tunnel: tunnel, timeout: timeout))
      return
    }
    if sshKey != nil || tunnel { throw CLIError("--ssh-key and --tunnel need --remote user@host") }
    if let m = registry.metadata(name), m.type != "local" {
      throw CLIError(
        "gateway '\(name)' is a \(m.type) registration (\(m.gateway_endpoint)), not a local gateway; pick another --name or remove it: openshell gateway destroy --name \(name)"
      )
    }
    if let m = registry.metadata(name), LocalGateway.isRegistrationOfAnother(m) {
      if let owner = LocalGateway(metadata: m).owner {
        throw CLIError("gateway '\(name)' is a registration of the local gateway '\(owner)'; start that one: openshell gateway start --name \(owner)")
      }
      throw CLIError(
        "gateway '\(name)' is a registration of \(m.gateway_endpoint) (gateway add), not a gateway deployed here; start the gateway behind it, or pick another --name"
      )
    }
    let gw = LocalGateway(name: name)

    // Options this gateway cannot honour are refused before anything is touched.
    try Unsupported.check(gpu: gpu, registryUsername: registryUsername, registryToken: registryToken)
    Unsupported.warnAboutEnvironment()

    // --recreate ends the old gateway's sandboxes: say which, and ask (or require --yes).
    if recreate, !yes {
      let live = SandboxReaper.liveSandboxes(dataDirectory: gw.dataDir.path)
      if !live.isEmpty {
        try PolicyCLI.confirm(
          "--recreate ends \(live.count) running sandbox(es) of gateway '\(name)': \(live.joined(separator: ", ")). Continue?", yes: false)
      }
    }

    switch gw.processState {
    case .stale(let pid):
      print("Removing stale pid file \(gw.pidFile.path) (pid \(pid) is not this gateway's daemon).")
      gw.removePIDFile()
    case .running(let pid):
      if restoreFrom != nil {
        throw CLIError("gateway '\(name)' is running (pid \(pid)); stop it first: openshell gateway stop --name \(name)")
      }
      if !recreate {
        guard let c = gw.launchConfig else { throw CLIError("gateway '\(name)' is running (pid \(pid)) but \(gw.configFile.path) is missing") }
        // Settings that need a restart are not silently ignored on a running gateway.
        var changes: [String] = []
        if let port, port != c.port { changes.append("port \(c.port) → \(port)") }
        if let bind, bind != c.bind { changes.append("listen address \(c.bind) → \(bind)") }
        let wantedAuth = plaintext ? "plaintext" : disableGatewayAuth ? "tls" : nil
        if let wantedAuth, wantedAuth != c.authMode { changes.append("auth mode \(c.authMode) → \(wantedAuth)") }
        if let oidc = OIDCSettings.resolve(issuer: oidcIssuer, audience: oidcAudience, clientID: oidcClientId, scopes: oidcScopes),
          oidc.issuer != c.oidcIssuer || oidc.audience != c.oidcAudience
        {
          changes.append("OIDC issuer \(c.oidcIssuer ?? "none") → \(oidc.issuer)")
        }
        if !changes.isEmpty {
          throw CLIError(
            "gateway '\(name)' is already running (pid \(pid)) with other settings (\(changes.joined(separator: ", "))); stop it first: openshell gateway stop --name \(name)"
          )
        }
        if !DaemonControl.registrationCurrent(gw, c) { _ = try DaemonControl.register(gw, c) }
        try registry.setActive(name)
        print("\(Style.check) Gateway '\(name)' is already running (pid \(pid)).")
        print("  Endpoint: \(c.endpoint)")
        return
      }
      print("• Stopping gateway \(name) (pid \(pid))...")
      _ = DaemonControl.stop(gw)
    case .stopped:
      break
    }

    // A daemon can hold the data dir without a pid file naming it (e.g. the file was removed by hand).
    if !recreate, let holder = gw.logWriterPID {
      throw CLIError(
        "gateway '\(name)''s data dir is in use by \(holder > 0 ? ProcessTable.describe(holder) : "another process") although no pid file names it; stop that process first"
      )
    }
    let stored = gw.launchConfig
    let authMode = plaintext ? "plaintext" : disableGatewayAuth ? "tls" : (stored?.authMode ?? "mtls")
    var config = LaunchConfig(
      name: name, port: port ?? stored?.port ?? 8080, bind: bind ?? stored?.bind ?? "127.0.0.1", authMode: authMode,
      gatewayHosts: gatewayHost.isEmpty ? (stored?.gatewayHosts ?? []) : gatewayHost,
      gpu: false, registryUsername: nil, registryTokenSHA256: nil)
    // OIDC: flags or OPENSHELL_OIDC_* replace the stored settings; without either the stored ones stay.
    if let oidc = OIDCSettings.resolve(issuer: oidcIssuer, audience: oidcAudience, clientID: oidcClientId, scopes: oidcScopes) {
      do { try oidc.validate() } catch { throw CLIError("\(error)") }
      config.oidcIssuer = oidc.issuer
      config.oidcAudience = oidc.audience
      config.oidcClientID = oidc.clientID
      config.oidcScopes = oidc.scopes
    } else if oidcAudience != nil || oidcClientId != nil || oidcScopes != nil {
      throw CLIError("--oidc-audience, --oidc-client-id and --oidc-scopes need --oidc-issuer (or OPENSHELL_OIDC_ISSUER)")
    } else if let stored, stored.oidcIssuer != nil {
      config.oidcIssuer = stored.oidcIssuer
      config.oidcAudience = stored.oidcAudience
      config.oidcClientID = stored.oidcClientID
      config.oidcScopes = stored.oidcScopes
    }
    if let stored, stored.gpu || stored.registryUsername != nil {
      print("Note: this gateway's stored GPU/registry settings are no longer applied (not supported yet).")
    }

    // Nothing is written before the port is known to be free.
    try DaemonControl.ensurePortFree(config.port, bind: config.bind)

    var archived: URL?
    if recreate && gw.exists {
      archived = try gw.archive()
    }
    if let source = restoreFrom {
      try await runRestore(source: source, gateway: gw)
    }
    let fresh = !gw.hasLog
    let createdDir = !gw.exists
    try FileManager.default.createDirectory(at: gw.dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    try gw.saveLaunchConfig(config)

    print(fresh ? "Deploying local gateway \(name)..." : "Resuming local gateway \(name)...")
    let pid = try DaemonControl.launch(gw, config)
    do {
      try await DaemonControl.waitHealthy(gw, config, pid: pid, timeout: timeout)
    } catch {
      if ProcessTable.isAlive(pid) { ProcessTable.terminate(pid, timeout: 10) }
      _ = ProcessTable.reap(pid)
      gw.removePIDFile()
      // The settings of a failed start are not kept: the next plain start uses the last good ones.
      if let stored, !recreate { try? gw.saveLaunchConfig(stored) }
      if fresh && createdDir && restoreFrom == nil {
        // A failed fresh deploy leaves nothing behind except its log, kept in the archive for diagnosis.
        if gw.logWriterPID == nil, let a = try? gw.archive(suffix: "-failed-start") {
          printErr("note: the failed start's files are in \(a.path)")
        }
      }
      throw error
    }

    let meta = try DaemonControl.register(gw, config)
    try registry.setActive(name)
    print("\(Style.check) Gateway ready")
    print("  Name:     \(name)")
    print("  Endpoint: \(meta.gateway_endpoint)")
    print("  Auth:     \(meta.auth_mode)")
    if let f = meta.ca_fingerprint { print("  CA:       \(shortFingerprint(f))") }
    print("\(Style.check) Active gateway set to '\(name)'")
    if let archived {
      print("")
      print("The previous gateway's data was archived (not deleted) to:")
      print("  \(archived.path)")
      print("Audit it:    openshell-replay audit \(archived.appendingPathComponent("log").path)")
      print("Verify it:   openshell-replay verify \(archived.appendingPathComponent("log").path)")
      print("Restore it:  openshell gateway stop --name \(name) && openshell gateway start --name \(name) --restore-from \(archived.path)")
      print("         or: openshell-replay restore \(archived.path) --gateway \(name)")
    }
  }

  /// Runs `openshell-replay restore` (installed next to this binary, or $OPENSHELL_REPLAY_BIN).
  private func runRestore(source: String, gateway gw: LocalGateway) async throws {
    let env = ProcessInfo.processInfo.environment
    let replay =
      env["OPENSHELL_REPLAY_BIN"]
      ?? URL(fileURLWithPath: ProcessTable.selfExecutable).deletingLastPathComponent().appendingPathComponent("openshell-replay").path
    guard FileManager.default.isExecutableFile(atPath: replay) else {
      throw CLIError("openshell-replay not found at \(replay) (set OPENSHELL_REPLAY_BIN)")
    }
    let code = try await ChildProcess.run(replay, ["restore", source, "--gateway", gw.name, "--data-dir", gw.dataDir.path, "--started-by-gateway-start"])
    guard code == 0 else { throw CLIError("restore from \(source) failed (see the message above)", code: code) }
  }
}
