import ArgumentParser
import Foundation

/// `openshell gateway add URL`: register a gateway that is already running.
struct GatewayAdd: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "add",
    abstract: "Register an existing gateway and make it active.",
    discussion: """
      http:// registers a plaintext gateway. https:// with --local registers a gateway running on this machine \
      with the operator certificates from its data dir. Any other URL is asked how it authenticates \
      (GET /auth/config): an OIDC gateway (a cloud gateway, e.g. behind a TLS-terminating proxy) is logged in \
      to with the browser (authorization code with PKCE and a loopback redirect) or, with --device, the \
      device-code flow; its tokens are stored in gateways/NAME/oidc_token.json (mode 0600). Nothing is \
      registered unless the login succeeds and the gateway accepts the token. An existing name is refused \
      unless --force, which prints the old and the new CA fingerprints.
      """)
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Gateway endpoint, e.g. https://127.0.0.1:8080 (no scheme means https).") var endpoint: String
  @Option(help: "Registration name (default: the URL's host).") var name: String?
  @Flag(help: "The gateway runs on this machine: use its data dir's certificates.") var local = false
  @Option(help: "Data dir of the local gateway (default: found by name or port under $XDG_STATE_HOME/openshell/gateways).")
  var dataDir: String?
  @Flag(help: "Replace an existing registration of the same name.") var force = false
  @Option(
    help:
      "PEM CA certificate that signs the server's (or its proxy's) certificate, for https:// gateways whose certificate no system root signs; stored with the registration."
  )
  var caFile: String?
  @OptionGroup var login: LoginOptions

  func run() async throws {
    try await cliRun {
      let registry = ClientRegistry.default
      var raw = endpoint.trimmingCharacters(in: .whitespaces)
      while raw.hasSuffix("/") { raw.removeLast() }
      if !raw.contains("://") { raw = "https://" + raw }
      if raw.hasPrefix("ssh://") { throw CLIError("ssh:// registrations (remote gateways) are not supported yet") }
      var probe = try Target(name: "", endpoint: raw, mtlsDir: nil)
      let loopback = ["127.0.0.1", "localhost", "::1"].contains(probe.host)
      let name = self.name ?? probe.host
      try ClientRegistry.validateName(name)

      let old = registry.metadata(name)
      if old != nil && !force {
        throw CLIError(
          "gateway '\(name)' already exists; remove it first with: openshell gateway destroy --name \(name) (or pass --force to replace its registration)")
      }
      let oldCA = try? CertInfo.load(registry.mtlsDir(name).appendingPathComponent("ca.crt").path)

      var meta: GatewayMetadata
      var bundle = ClientRegistry.Bundle()
      var secrets: [String: Data] = [:]
      let now = iso8601(Date())
      var caPEM: String?
      if let caFile {
        guard let pem = try? String(contentsOfFile: caFile, encoding: .utf8), (try? CertInfo(pem: pem)) != nil else {
          throw CLIError("--ca-file \(caFile) is not a readable PEM certificate")
        }
        caPEM = pem
        probe.caPath = caFile
      }
      // Not --local: ask the gateway how it authenticates. An http:// gateway that cannot be reached keeps the
      // plain registration it always had; a server that answers but is not a gateway is refused.
      let description: [String: Any]?
      do {
        description = local ? nil : try await CloudGateway.describe(probe)
      } catch let e as CloudGateway.NotAGateway {
        throw CLIError(e.message)
      } catch  where !probe.tls {
        description = nil
      }
      if let description, description["auth_mode"] as? String == "oidc" {
        // A bearer token is a replayable operator credential: never over cleartext beyond this machine.
        if !probe.tls && !loopback {
          throw CLIError(
            "refusing to send bearer tokens in cleartext to \(raw): register the gateway through https:// (a TLS-terminating proxy in front of it), or reach it on this machine's loopback; nothing was registered"
          )
        }
        guard let oidc = description["oidc"] as? [String: Any], let issuer = oidc["issuer"] as? String else {
          throw CLIError("\(raw) says it uses OIDC but names no issuer")
        }
        let scopes = oidc["scopes"] as? String ?? "openid"
        let clientID = oidc["client_id"] as? String ?? "openshell-cli"
        let tokens = try await OIDCLogin.login(issuer: issuer, login.options(clientID: clientID, scopes: scopes))
        var target = probe
        target.name = name
        try await CloudGateway.check(target, token: tokens.access_token)
        secrets[OIDCTokenBundle.fileName] = try tokens.encoded()
        bundle = .init(ca: caPEM)
        meta = GatewayMetadata(
          name: name, gateway_endpoint: raw, is_remote: !loopback, gateway_port: 0, auth_mode: "oidc", type: "cloud",
          ca_fingerprint: try caPEM.map { try CertInfo(pem: $0).fingerprint }, created_at: now, updated_at: now,
          oidc_issuer: issuer, oidc_client_id: tokens.client_id, oidc_audience: oidc["audience"] as? String, oidc_scopes: scopes)
      } else if let description, probe.tls {
        let mode = description["auth_mode"] as? String ?? "mtls"
        guard mode == "tls" else {
          throw CLIError(
            "\(raw) requires client certificates (mTLS); register a gateway on this machine with --local, or ask its operator for a certificate bundle")
        }
        bundle = .init(ca: caPEM)
        meta = GatewayMetadata(
          name: name, gateway_endpoint: raw, is_remote: !loopback, gateway_port: 0, auth_mode: "tls", type: loopback ? "local" : "remote",
          ca_fingerprint: try caPEM.map { try CertInfo(pem: $0).fingerprint }, created_at: now, updated_at: now)
      } else if !probe.tls {
        meta = GatewayMetadata(
          name: name, gateway_endpoint: raw, is_remote: !(local || loopback), gateway_port: 0, auth_mode: "plaintext",
          type: local || loopback ? "local" : "remote", created_at: now, updated_at: now)
      } else if local {
        let gw = try findLocal(name: name, port: probe.port)
        let mode = gw.launchConfig?.authMode ?? "mtls"
        func read(_ f: String) throws -> String {
          guard let s = try? String(contentsOfFile: gw.pki(f), encoding: .utf8) else {
            throw CLIError("\(gw.pki(f)) is missing: is \(gw.dataDir.path) a gateway data dir?")
          }
          return s
        }
        bundle = .init(ca: try read("ca.crt"), cert: try read("client.crt"), key: try read("client.key"))
        meta = GatewayMetadata(
          name: name, gateway_endpoint: raw, is_remote: false, gateway_port: 0, auth_mode: mode == "plaintext" ? "mtls" : mode,
          type: "local", data_dir: gw.dataDir.path, ca_fingerprint: try CertInfo(pem: bundle.ca!).fingerprint,
          created_at: now, updated_at: now)
      } else {
        throw CLIError("\(raw) could not be registered")
      }

      if old != nil {
        let newFP = meta.ca_fingerprint ?? "none"
        print("Replacing registration '\(name)':")
        print("  old: \(old!.gateway_endpoint), CA \(oldCA?.fingerprint ?? "none")")
        print("  new: \(meta.gateway_endpoint), CA \(newFP)")
        if let o = oldCA, o.fingerprint != newFP { print("  \(Style.yellow("!")) the CA changed: certificates stored for '\(name)' are replaced") }
      }
      try registry.write(meta, bundle: bundle, secrets: secrets)
      try registry.setActive(name)
      print("\(Style.check) Gateway '\(name)' added and set as active")
      print("  Endpoint: \(meta.gateway_endpoint)")
      print("  Type:     \(meta.type)")
      print("  Auth:     \(meta.auth_mode == "oidc" ? "Bearer (OIDC)" : meta.auth_mode)")
      if let issuer = meta.oidc_issuer { print("  Issuer:   \(issuer)") }
      if let e = registry.oidcToken(name)?.expires_at { print("  Token expires: \(CloudGateway.expiry(e))") }
      if let f = meta.ca_fingerprint { print("  CA:       \(f)") }
    }
  }

  /// The local gateway behind an https endpoint: --data-dir, else the data dir of that name if it
  /// listens on the port, else any local gateway whose launch config has that port.
  private func findLocal(name: String, port: Int) throws -> LocalGateway {
    if let d = dataDir { return LocalGateway(name: name, dataDir: URL(fileURLWithPath: d)) }
    let byName = LocalGateway(name: name)
    if byName.launchConfig?.port == port { return byName }
    let root = LocalGateway.stateRoot.appendingPathComponent("gateways")
    for dir in (try? FileManager.default.contentsOfDirectory(atPath: root.path))?.sorted() ?? [] {
      let gw = LocalGateway(name: dir, dataDir: root.appendingPathComponent(dir))
      if gw.launchConfig?.port == port { return LocalGateway(name: name, dataDir: gw.dataDir) }
    }
    if byName.exists { return byName }
    throw CLIError("no local gateway found for port \(port) under \(root.path); pass --data-dir DIR")
  }
}
