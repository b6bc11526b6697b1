import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The browser and device logins of `gateway add` / `gateway login` (issue 13).
///
/// - Authorization code with PKCE (RFC 7636, S256) and a loopback redirect (RFC 8252 §7.3): the URL is
///   printed, and opened in a browser unless `--no-browser`, `$OPENSHELL_NO_BROWSER`, or no display.
/// - Device authorization grant (RFC 8628), `--device`, for machines without a browser: prints the
///   verification URL and user code and polls the token endpoint at the provider's interval.
enum OIDCLogin {
  struct Options {
    var clientID: String
    var scopes: String
    var noBrowser = false
    var device = false
    /// How long to wait for the person to finish logging in.
    var timeout: Duration = .seconds(300)
  }

  /// Logs in at `issuer` and returns the tokens in registry form.
  /// - Throws: `CLIError` with one readable line (provider unreachable, login refused, timeout).
  static func login(issuer: String, _ o: Options) async throws -> OIDCTokenBundle {
    let provider = try await OIDCClient.discover(issuer: issuer)
    let response = o.device ? try await deviceCode(provider, o) : try await authorizationCode(provider, o)
    return response.bundle(issuer: issuer, clientID: o.clientID)
  }

  static func authorizationCode(_ provider: OIDCProvider, _ o: Options) async throws -> TokenResponse {
    guard let authorize = provider.authorizationEndpoint, var url = URLComponents(string: authorize) else {
      throw CLIError("the identity provider \(provider.issuer) has no authorization_endpoint; try --device")
    }
    let listener = try await LoopbackRedirect.start()
    defer { listener.close() }
    let (verifier, challenge) = OIDCClient.pkce()
    let state = OIDCClient.randomState()
    url.queryItems =
      (url.queryItems ?? []) + [
        URLQueryItem(name: "response_type", value: "code"), URLQueryItem(name: "client_id", value: o.clientID),
        URLQueryItem(name: "redirect_uri", value: listener.redirectURI), URLQueryItem(name: "scope", value: o.scopes),
        URLQueryItem(name: "state", value: state), URLQueryItem(name: "code_challenge", value: challenge),
        URLQueryItem(name: "code_challenge_method", value: "S256"),
      ]
    guard let link = url.url?.absoluteString else { throw CLIError("cannot build the authorization URL from \(authorize)") }
    let opened = !o.noBrowser && openBrowser(link)
    printErr(opened ? "Opened a browser to log in. If it did not open, visit:" : "To log in, open this URL in a browser:")
    printErr("  \(link)")
    printErr("Waiting for the login to finish (up to \(Self.span(o.timeout.components.seconds)))...")
    guard let query = await listener.wait(timeout: o.timeout) else {
      throw CLIError("the login did not finish within \(o.timeout.components.seconds) s; run the command again")
    }
    if let error = query["error"] {
      throw CLIError("the identity provider refused the login: \(error)\(query["error_description"].map { " (\($0))" } ?? "")")
    }
    guard query["state"] == state else { throw CLIError("the login redirect carried a wrong state parameter; refusing it (run the command again)") }
    guard let code = query["code"], !code.isEmpty else { throw CLIError("the login redirect carried no authorization code") }
    do {
      return try await OIDCClient.token(
        provider,
        form: [
          "grant_type": "authorization_code", "code": code, "redirect_uri": listener.redirectURI, "client_id": o.clientID,
          "code_verifier": verifier,
        ])
    } catch let e as TokenEndpointError {
      throw CLIError("the identity provider refused the authorization code: \(e)")
    }
  }

  static func deviceCode(_ provider: OIDCProvider, _ o: Options) async throws -> TokenResponse {
    let d = try await OIDCClient.deviceAuthorization(provider, clientID: o.clientID, scopes: o.scopes)
    let deviceCode = d["device_code"] as? String ?? ""
    let userCode = d["user_code"] as? String ?? ""
    let verification = d["verification_uri"] as? String ?? (d["verification_url"] as? String ?? "")
    printErr("To log in, visit \(verification) and enter the code \(userCode)")
    if let complete = d["verification_uri_complete"] as? String { printErr("  (or open \(complete))") }
    var interval = max(1, (d["interval"] as? Int) ?? 5)
    let lifetime = min(Int(o.timeout.components.seconds), (d["expires_in"] as? Int) ?? 600)
    let deadline = Date().addingTimeInterval(TimeInterval(lifetime))
    while Date() < deadline {
      try await Task.sleep(for: .seconds(interval))
      do {
        return try await OIDCClient.token(
          provider,
          form: [
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": deviceCode, "client_id": o.clientID,
          ])
      } catch let e as TokenEndpointError {
        switch e.code {
        case "authorization_pending": continue
        case "slow_down": interval += 5
        case "access_denied": throw CLIError("the login was denied at the identity provider")
        case "expired_token": throw CLIError("the device code expired before the login finished; run the command again")
        default: throw CLIError("the identity provider refused the device login: \(e)")
        }
      }
    }
    throw CLIError("the device login did not finish within \(lifetime) s; run the command again")
  }

  /// Starts `xdg-open URL` when there is a display; false when no browser could be started.
  static func openBrowser(_ url: String) -> Bool {
    let env = ProcessInfo.processInfo.environment
    if let v = env["OPENSHELL_NO_BROWSER"], !v.isEmpty { return false }
    guard env["DISPLAY"] != nil || env["WAYLAND_DISPLAY"] != nil else { return false }
    let path = (env["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map { "\($0)/xdg-open" }
      .first { FileManager.default.isExecutableFile(atPath: $0) }
    guard let path else { return false }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = [url]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    do { try p.run() } catch { return false }
    return true
  }
}

extension OIDCLogin {
  /// `90 s`, `5 min`: a wait in the unit that reads best (a 3 s timeout is not "0 minutes").
  static func span(_ seconds: Int64) -> String { seconds < 120 ? "\(seconds) s" : "\(seconds / 60) min" }
}
