import Foundation

/// How the gateway accepts OIDC bearer tokens (`--oidc-issuer`, `--oidc-audience`, `--oidc-client-id`,
/// `--oidc-scopes`, or `OPENSHELL_OIDC_ISSUER`, `OPENSHELL_OIDC_AUDIENCE`, `OPENSHELL_OIDC_CLIENT_ID`,
/// `OPENSHELL_OIDC_SCOPES`; issue 13, openshell-behavior.md §8.3 "User authentication: … OIDC (issuer,
/// audience …)").
///
/// Tokens are JWS-signed JWTs (RFC 7519) that the issuer's keys (its discovery document's `jwks_uri`,
/// OpenID Connect Discovery 1.0 §3) verify; `iss` must equal ``issuer``, `aud` must contain
/// ``audience``, `exp`/`nbf`/`iat` are checked with ``clockSkew`` of tolerance (RFC 7519 §4.1.4-6).
/// Who holds such a token is an operator of this gateway: there are no roles yet (the token's `sub`
/// becomes the actor of every event the caller causes).
public struct OIDCSettings: Sendable, Hashable {
  /// The issuer identifier, e.g. `https://idp.example.com/realms/x` (no trailing `/` is needed: both
  /// forms compare equal, as the openshell SDK compares them).
  public var issuer: String
  /// The audience every accepted token must carry in `aud`.
  public var audience: String
  /// The public client id the CLI uses for the authorization-code flow (published on `/auth/config`).
  public var clientID: String?
  /// Scopes the CLI requests (space separated; published on `/auth/config`). Default `openid`.
  public var scopes: String = "openid"
  /// Tolerance for `exp`, `nbf` and `iat` against this host's clock. Default 60 s.
  public var clockSkew: Duration = .seconds(60)
  /// Least time between two JWKS fetches caused by tokens with an unknown `kid` (a flood of forged
  /// `kid`s must not become a flood of requests to the issuer). Default 10 s.
  public var minimumKeyRefreshInterval: Duration = .seconds(10)
  /// Cached keys are fetched again after this long (on the next verification). Default 1 h.
  public var keyCacheLifetime: Duration = .seconds(3600)
  /// Timeout of one request to the issuer. Default 5 s.
  public var fetchTimeout: TimeInterval = 5

  /// Settings for this issuer and audience, with the defaults for every other field.
  public init(issuer: String, audience: String, clientID: String? = nil) {
    self.issuer = issuer
    self.audience = audience
    self.clientID = clientID
  }

  /// The issuer without trailing slashes (the comparison form).
  public var normalizedIssuer: String {
    var s = issuer
    while s.hasSuffix("/") { s.removeLast() }
    return s
  }

  /// `<issuer>/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4).
  public var discoveryURL: URL? { URL(string: normalizedIssuer + "/.well-known/openid-configuration") }

  /// Checks the settings: the issuer must be an `https://` URL, or `http://` on a loopback host (for
  /// tests and local identity providers; the same rule as the openshell SDK's `_validate_oauth_url`),
  /// without user info, query or fragment; the audience must not be empty.
  /// - Throws: ``OIDCSettingsError`` naming the field.
  public func validate() throws {
    guard let c = URLComponents(string: issuer), let scheme = c.scheme?.lowercased(), let host = c.host, !host.isEmpty else {
      throw OIDCSettingsError("--oidc-issuer '\(issuer)' is not a URL; expected https://HOST[/PATH]")
    }
    guard c.user == nil, c.password == nil, c.query == nil, c.fragment == nil else {
      throw OIDCSettingsError("--oidc-issuer must not contain user info, a query or a fragment")
    }
    let loopback = Self.isLoopback(host)
    guard scheme == "https" || (scheme == "http" && loopback) else {
      throw OIDCSettingsError("--oidc-issuer must use https:// (http:// is accepted only for a loopback issuer)")
    }
    guard !audience.trimmingCharacters(in: .whitespaces).isEmpty else {
      throw OIDCSettingsError("--oidc-audience is required with --oidc-issuer (the `aud` every token must carry)")
    }
  }

  /// Whether `host` is `localhost` or a loopback address literal (127.0.0.0/8, ::1) — parsed as an address,
  /// so a name such as `127.evil.example` is not loopback.
  public static func isLoopback(_ host: String) -> Bool {
    let h = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
    if h == "localhost" || h == "::1" { return true }
    var addr = in_addr()
    guard inet_pton(AF_INET, h, &addr) == 1 else { return false }
    return UInt32(bigEndian: addr.s_addr) >> 24 == 127
  }

  /// Settings from `OPENSHELL_OIDC_ISSUER`, `OPENSHELL_OIDC_AUDIENCE`, `OPENSHELL_OIDC_CLIENT_ID` and
  /// `OPENSHELL_OIDC_SCOPES`, each overridden by the corresponding argument when that is non-nil.
  /// nil when no issuer is configured.
  public static func resolve(
    issuer: String?, audience: String?, clientID: String?, scopes: String?,
    environment: [String: String] = ProcessInfo.processInfo.environment
  ) -> OIDCSettings? {
    func pick(_ flag: String?, _ variable: String) -> String? {
      if let flag, !flag.isEmpty { return flag }
      if let v = environment[variable], !v.isEmpty { return v }
      return nil
    }
    guard let iss = pick(issuer, "OPENSHELL_OIDC_ISSUER") else { return nil }
    var s = OIDCSettings(
      issuer: iss, audience: pick(audience, "OPENSHELL_OIDC_AUDIENCE") ?? "",
      clientID: pick(clientID, "OPENSHELL_OIDC_CLIENT_ID"))
    if let sc = pick(scopes, "OPENSHELL_OIDC_SCOPES") { s.scopes = sc }
    return s
  }
}

/// An invalid OIDC configuration (one readable sentence).
public struct OIDCSettingsError: Error, CustomStringConvertible, Sendable {
  /// The sentence, naming the flag or variable at fault.
  public let description: String
  /// An error with this sentence.
  public init(_ description: String) { self.description = description }
}
