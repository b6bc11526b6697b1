import Crypto
import Foundation
import Gateway

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// The identity provider's endpoints, from its discovery document (OpenID Connect Discovery 1.0 §3).
struct OIDCProvider: Sendable {
  var issuer: String
  var authorizationEndpoint: String?
  var tokenEndpoint: String
  /// RFC 8628 §4 `device_authorization_endpoint`, when the provider advertises one.
  var deviceAuthorizationEndpoint: String?
}

/// A token endpoint's answer (RFC 6749 §5.1).
struct TokenResponse: Sendable {
  var accessToken: String
  var refreshToken: String?
  var expiresIn: Int?

  /// The registry form, with `expires_at` from `expires_in` (else the JWT's `exp`, read unverified
  /// only to show and schedule refreshes; the gateway verifies it).
  func bundle(issuer: String, clientID: String, previousRefresh: String? = nil, now: Date = Date()) -> OIDCTokenBundle {
    var expiresAt = expiresIn.map { Int(now.timeIntervalSince1970) + $0 }
    if expiresAt == nil { expiresAt = OIDCClient.unverifiedExpiry(accessToken) }
    return OIDCTokenBundle(
      access_token: accessToken, refresh_token: refreshToken ?? previousRefresh, expires_at: expiresAt, issuer: issuer,
      client_id: clientID)
  }
}

/// OAuth 2.0 / OIDC client calls of the CLI: discovery, the token endpoint (authorization code with PKCE,
/// RFC 7636; device code, RFC 8628; refresh, RFC 6749 §6). Redirects are never followed (a redirect
/// could send a code or refresh token elsewhere), and no error carries a token.
enum OIDCClient {
  static let timeout: TimeInterval = 15

  static func session() -> URLSession {
    let c = URLSessionConfiguration.ephemeral
    c.timeoutIntervalForRequest = timeout
    c.timeoutIntervalForResource = timeout
    return URLSession(configuration: c, delegate: RefuseRedirects(), delegateQueue: nil)
  }

  /// Fetches and checks `<issuer>/.well-known/openid-configuration`.
  /// - Throws: `CLIError` naming the identity provider and what failed.
  static func discover(issuer: String) async throws -> OIDCProvider {
    var iss = issuer
    while iss.hasSuffix("/") { iss.removeLast() }
    guard let url = URL(string: iss + "/.well-known/openid-configuration") else { throw CLIError("invalid OIDC issuer '\(issuer)'") }
    let (status, object) = try await request(url, form: nil, what: "the identity provider (\(iss))")
    guard status == 200 else { throw CLIError("the identity provider's discovery document \(url) answered HTTP \(status)") }
    var advertised = object["issuer"] as? String ?? ""
    while advertised.hasSuffix("/") { advertised.removeLast() }
    guard advertised == iss else {
      throw CLIError("the identity provider at \(iss) names itself '\(advertised)' in its discovery document; refusing to log in there")
    }
    guard let token = object["token_endpoint"] as? String, !token.isEmpty else {
      throw CLIError("the identity provider's discovery document has no token_endpoint")
    }
    return OIDCProvider(
      issuer: issuer, authorizationEndpoint: object["authorization_endpoint"] as? String, tokenEndpoint: token,
      deviceAuthorizationEndpoint: object["device_authorization_endpoint"] as? String)
  }

  /// POSTs a form to the token endpoint. Returns the tokens, or throws `TokenEndpointError` with the
  /// OAuth `error` code (RFC 6749 §5.2) so that callers can tell `authorization_pending` from a refusal.
  static func token(_ provider: OIDCProvider, form: [String: String]) async throws -> TokenResponse {
    guard let url = URL(string: provider.tokenEndpoint) else { throw CLIError("invalid token endpoint \(provider.tokenEndpoint)") }
    let (status, object) = try await request(url, form: form, what: "the identity provider's token endpoint")
    guard status == 200 else {
      throw TokenEndpointError(
        code: object["error"] as? String ?? "HTTP \(status)", description: object["error_description"] as? String)
    }
    guard let access = object["access_token"] as? String, !access.isEmpty else {
      throw CLIError("the identity provider's token response has no access_token")
    }
    let expires = (object["expires_in"] as? Int) ?? (object["expires_in"] as? Double).map(Int.init)
    return TokenResponse(accessToken: access, refreshToken: object["refresh_token"] as? String, expiresIn: expires)
  }

  /// The RFC 8628 §3.1 device authorization request.
  static func deviceAuthorization(_ provider: OIDCProvider, clientID: String, scopes: String) async throws -> [String: Any] {
    guard let endpoint = provider.deviceAuthorizationEndpoint, let url = URL(string: endpoint) else {
      throw CLIError("the identity provider \(provider.issuer) does not offer the device flow (no device_authorization_endpoint); log in without --device")
    }
    let (status, object) = try await request(url, form: ["client_id": clientID, "scope": scopes], what: "the identity provider's device endpoint")
    guard status == 200, object["device_code"] is String, object["user_code"] is String else {
      let reason = (object["error_description"] as? String) ?? (object["error"] as? String) ?? "HTTP \(status)"
      throw CLIError("the identity provider refused the device login: \(reason)")
    }
    return object
  }

  /// One request; the body is parsed as a JSON object (empty when it is not one).
  static func request(_ url: URL, form: [String: String]?, what: String) async throws -> (Int, [String: Any]) {
    var r = URLRequest(url: url)
    r.setValue("application/json", forHTTPHeaderField: "Accept")
    if let form {
      r.httpMethod = "POST"
      r.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
      r.httpBody = Data(formEncode(form).utf8)
    }
    let s = session()
    defer { s.finishTasksAndInvalidate() }
    do {
      let (data, response) = try await s.data(for: r)
      let status = (response as? HTTPURLResponse)?.statusCode ?? 0
      let object = (try? JSONSerialization.jsonObject(with: data.prefix(1 << 20))) as? [String: Any] ?? [:]
      return (status, object)
    } catch {
      throw CLIError(
        "cannot reach \(what) at \(url.scheme ?? "")://\(url.host ?? "")\(url.port.map { ":\($0)" } ?? ""): \(error.localizedDescription); is it up?")
    }
  }

  /// `application/x-www-form-urlencoded` (WHATWG URL §5.2).
  static func formEncode(_ form: [String: String]) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._*")
    return form.sorted { $0.key < $1.key }.map { k, v in
      "\(k.addingPercentEncoding(withAllowedCharacters: allowed) ?? k)=\(v.addingPercentEncoding(withAllowedCharacters: allowed) ?? v)"
    }.joined(separator: "&")
  }

  /// PKCE (RFC 7636 §4.1-4.2): a 43-character verifier from 32 random bytes, and its S256 challenge.
  static func pkce() -> (verifier: String, challenge: String) {
    let verifier = base64URL(Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }))
    return (verifier, base64URL(Data(SHA256.hash(data: Data(verifier.utf8)))))
  }

  static func randomState() -> String { base64URL(Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })) }

  static func base64URL(_ d: Data) -> String {
    d.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
      .replacingOccurrences(of: "=", with: "")
  }

  /// The `exp` of a JWT, read without verification (to show the expiry and schedule refreshes).
  static func unverifiedExpiry(_ jwt: String) -> Int? {
    let parts = jwt.split(separator: ".")
    guard parts.count == 3 else { return nil }
    var b = String(parts[1]).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while b.count % 4 != 0 { b += "=" }
    guard let data = Data(base64Encoded: b), let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
    return (o["exp"] as? Int) ?? (o["exp"] as? Double).map(Int.init)
  }
}

/// An error answer of the token endpoint (RFC 6749 §5.2).
struct TokenEndpointError: Error, CustomStringConvertible {
  var code: String
  var description_: String?
  init(code: String, description: String?) {
    self.code = code
    self.description_ = description
  }
  var description: String { description_.map { "\(code): \($0)" } ?? code }
}
