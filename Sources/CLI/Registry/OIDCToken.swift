import Foundation

/// `gateways/<name>/oidc_token.json` (mode 0600): the OIDC tokens of a cloud gateway, in the shape the
/// openshell SDK 0.1.5 reads and writes back (`_OidcRefresher`: `access_token`, `refresh_token`,
/// `expires_at` as Unix seconds, `issuer`, `client_id`; nil fields omitted).
struct OIDCTokenBundle: Codable, Equatable {
  static let fileName = "oidc_token.json"

  var access_token: String
  var refresh_token: String?
  /// Unix time (seconds) at which the access token expires; nil = unknown.
  var expires_at: Int?
  var issuer: String
  var client_id: String

  /// Whether the access token is still good for `margin` seconds (the SDK uses 30 s).
  func isFresh(now: Date = Date(), margin: Int = 30) -> Bool {
    guard let e = expires_at else { return true }
    return Int(now.timeIntervalSince1970) + margin < e
  }

  /// The bytes written to disk (pretty-printed JSON, sorted keys).
  func encoded() throws -> Data {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return try enc.encode(self)
  }
}

extension ClientRegistry {
  func oidcTokenFile(_ name: String) -> URL { gatewayDir(name).appendingPathComponent(OIDCTokenBundle.fileName) }

  /// The stored tokens of `name`, or nil when there are none (or the file does not parse).
  func oidcToken(_ name: String) -> OIDCTokenBundle? {
    guard let data = try? Data(contentsOf: oidcTokenFile(name)) else { return nil }
    return try? JSONDecoder().decode(OIDCTokenBundle.self, from: data)
  }

  /// Replaces the stored tokens of an existing registration atomically (temporary file, fsync, rename;
  /// mode 0600).
  func writeOIDCToken(_ name: String, _ bundle: OIDCTokenBundle) throws {
    guard metadata(name) != nil else { throw CLIError("unknown gateway '\(name)'") }
    try writeFile(oidcTokenFile(name), bundle.encoded(), mode: 0o600)
  }
}
