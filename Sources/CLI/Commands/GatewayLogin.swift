import ArgumentParser
import Foundation
import GRPCCore
import Gateway
import OpenShellAPI

/// Login options shared by `gateway add` (cloud gateways) and `gateway login`.
struct LoginOptions: ParsableArguments {
  @Flag(help: "Do not open a browser; print the login URL (also: OPENSHELL_NO_BROWSER=1).") var noBrowser = false
  @Flag(help: "Use the device-code flow (for machines without a browser).") var device = false
  @Option(help: "OIDC client id to log in with (default: the one the gateway publishes).") var clientId: String?
  @Option(help: "Seconds to wait for the login to finish.") var loginTimeout: Int = 300

  func options(clientID: String, scopes: String) -> OIDCLogin.Options {
    OIDCLogin.Options(
      clientID: clientId ?? clientID, scopes: scopes, noBrowser: noBrowser, device: device,
      timeout: .seconds(max(1, loginTimeout)))
  }
}

/// `openshell gateway login [NAME]`: logs in again to an OIDC gateway and replaces its stored tokens.
struct GatewayLogin: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "login", abstract: "Log in to a cloud (OIDC) gateway again and store its new tokens.")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Gateway name (default: -g, $OPENSHELL_GATEWAY, the active gateway).") var name: String?
  @OptionGroup var login: LoginOptions

  func run() async throws {
    try await cliRun {
      let registry = ClientRegistry.default
      let name = global.name(self.name)
      try ClientRegistry.validateName(name)
      guard let meta = registry.metadata(name) else { throw CLIError("unknown gateway '\(name)'") }
      guard meta.auth_mode == "oidc", let issuer = meta.oidc_issuer else {
        throw CLIError("gateway '\(name)' does not use OIDC authentication (auth mode \(meta.auth_mode)); nothing to log in to")
      }
      let stored = registry.oidcToken(name)
      let clientID = login.clientId ?? stored?.client_id ?? meta.oidc_client_id ?? "openshell-cli"
      let tokens = try await OIDCLogin.login(issuer: issuer, login.options(clientID: clientID, scopes: meta.oidc_scopes ?? "openid"))
      let target = try Target(name: name, endpoint: meta.gateway_endpoint, authMode: meta.auth_mode, mtlsDir: registry.mtlsDir(name))
      try await CloudGateway.check(target, token: tokens.access_token)
      try registry.writeOIDCToken(name, tokens)
      print("\(Style.check) Authenticated to gateway '\(name)'")
      if let e = tokens.expires_at { print("  Token expires: \(CloudGateway.expiry(e))") }
    }
  }
}

/// What `gateway add` and `gateway login` need from a cloud gateway.
enum CloudGateway {
  /// `GET /auth/config` (``Gateway/GatewayAuthDescription``), parsed.
  /// - Throws: `CLIError` when the URL cannot be reached or is not an OpenShell gateway.
  static func describe(_ probe: Target) async throws -> [String: Any] {
    let r: HTTPProbe.Response
    do {
      r = try await HTTPProbe.get(probe, path: "/auth/config", timeout: .seconds(5))
    } catch {
      var reason = oneLine("\(error)")
      if let e = error as? CLIError { reason = e.message }
      throw CLIError(
        "cannot reach \(probe.endpoint): \(tlsFailure(reason) ?? Self.transportReason(reason)) (is the gateway up? a gateway that requires client certificates is registered with --local)"
      )
    }
    let body = r.body.firstIndex(of: "{").map { String(r.body[$0...]) } ?? r.body
    guard r.status == 200, let data = body.data(using: .utf8),
      let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
      object["service"] as? String == "openshell-gateway"
    else {
      throw NotAGateway(
        "\(probe.endpoint) is not an OpenShell gateway (GET /auth/config answered HTTP \(r.status) without a gateway description); check the URL; nothing was registered"
      )
    }
    return object
  }

  /// A transport failure in words (the networking library's description names its types and build paths).
  static func transportReason(_ text: String) -> String {
    if text.contains("Connection refused") || text.contains("errno: 111") { return "connection refused" }
    if text.contains("WRONG_VERSION_NUMBER") { return "the server does not speak TLS on that port (an http:// endpoint?)" }
    if text.contains("CERTIFICATE_REQUIRED") { return "the gateway requires a client certificate (mTLS)" }
    if text.contains("timed out") || text.contains("Timed out") { return "connection timed out" }
    if text.contains("resolve") || text.contains("getaddrinfo") || text.contains("No address") { return "host name not found" }
    if text.contains("handshakeFailed") { return "the TLS handshake failed" }
    return text
  }

  /// A server answered, but not as an OpenShell gateway (as opposed to one that could not be reached).
  struct NotAGateway: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
  }

  /// Calls `GetGatewayInfo` with `token`, so that a registration is written only when the gateway accepts
  /// the token through whatever sits in front of it.
  static func check(_ t: Target, token: String) async throws {
    do {
      _ = try await GatewayClient.withConnection(t, bearer: token) { client in
        try await Openshell_V1_OpenShell.Client(wrapping: client).getGatewayInfo(.init(), options: GatewayClient.options(timeout: .seconds(10)))
      }
    } catch let e as RPCError {
      if e.code == .unauthenticated, e.gatewayReason == GatewayErrorReason.bearerTokenMissing {
        throw CLIError(
          "the gateway at \(t.endpoint) did not receive the access token: a proxy in front of it may strip the authorization header (\(oneLine(e.message)))")
      }
      if e.code == .unauthenticated { throw CLIError("the gateway at \(t.endpoint) refused the new access token: \(oneLine(e.message))") }
      throw CLIError(
        "the gateway at \(t.endpoint) did not answer over gRPC: \(connectionFailure(e) ?? oneLine(e.message)) (a proxy in front of it must pass gRPC over HTTP/2)"
      )
    }
  }

  /// `2026-12-05T23:10:00Z (in 59 min)`.
  static func expiry(_ unix: Int, now: Date = Date()) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    let left = unix - Int(now.timeIntervalSince1970)
    let rel = left <= 0 ? "expired; refreshed on next use" : left < 120 ? "in \(left) s" : "in \(left / 60) min"
    return "\(f.string(from: Date(timeIntervalSince1970: TimeInterval(unix)))) (\(rel))"
  }
}
