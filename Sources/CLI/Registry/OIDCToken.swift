import Foundation
import Synchronization

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
    let file = oidcTokenFile(name)
    guard let data = try? Data(contentsOf: file) else { return nil }
    // The tokens are operator credentials: say so when someone loosened the file's mode (it is still used).
    var st = stat()
    if stat(file.path, &st) == 0, st.st_mode & 0o077 != 0 {
      Self.warnOnce(
        "warning: \(file.path) is readable by others (mode \(String(st.st_mode & 0o777, radix: 8))); it holds the gateway's login tokens: chmod 600 it\n")
    }
    return try? JSONDecoder().decode(OIDCTokenBundle.self, from: data)
  }

  /// Replaces the stored tokens of an existing registration atomically (temporary file, fsync, rename;
  /// mode 0600).
  func writeOIDCToken(_ name: String, _ bundle: OIDCTokenBundle) throws {
    guard metadata(name) != nil else { throw CLIError("unknown gateway '\(name)'") }
    try writeFile(oidcTokenFile(name), bundle.encoded(), mode: 0o600)
  }
}

extension ClientRegistry {
  private static let warned = Mutex<Set<String>>([])

  /// Prints `line` to stderr once per process.
  static func warnOnce(_ line: String) {
    guard warned.withLock({ $0.insert(line).inserted }) else { return }
    FileHandle.standardError.write(Data(line.utf8))
  }
}
