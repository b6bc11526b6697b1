import Foundation

/// The public, unauthenticated description of how to authenticate to this gateway, served as
/// `GET /auth/config` (issue 13: `openshell gateway add https://…` discovers the auth mode from it).
///
/// Shape (JSON object, fields omitted when not applicable):
/// ```json
/// {"service":"openshell-gateway","version":"0.1.0","transport":"mtls|tls|plaintext",
///  "auth_mode":"oidc|mtls|tls|plaintext",
///  "oidc":{"issuer":"https://idp/…","audience":"openshell","client_id":"openshell-cli","scopes":"openid"}}
/// ```
/// `transport` is what the gateway's own port speaks (behind a TLS-terminating proxy, `plaintext`);
/// `auth_mode` is `oidc` when bearer tokens are accepted, else the transport's mode. Nothing secret is in
/// it: issuer, audience and a public client id are what every client needs before it can log in.
public struct GatewayAuthDescription: Sendable, Hashable {
  /// The route.
  public static let path = "/auth/config"
  /// The value of `service`, by which the CLI tells a gateway from any other HTTPS server.
  public static let serviceName = "openshell-gateway"

  /// What the gateway's own port speaks (gives `transport`, and `auth_mode` without OIDC).
  public var security: GatewaySecurityMode
  /// The OIDC settings when bearer tokens are accepted (`auth_mode` `oidc`); nil otherwise.
  public var oidc: OIDCSettings?

  /// The description of a gateway with this transport and OIDC configuration.
  public init(security: GatewaySecurityMode, oidc: OIDCSettings?) {
    self.security = security
    self.oidc = oidc
  }

  /// The transport name: `mtls`, `tls` or `plaintext`.
  public var transport: String {
    switch security {
    case .mutualTLS: "mtls"
    case .tls: "tls"
    case .plaintext: "plaintext"
    }
  }

  /// The JSON body.
  public var json: String {
    var object: [String: Any] = [
      "service": Self.serviceName, "version": gatewayVersion, "transport": transport,
      "auth_mode": oidc == nil ? transport : "oidc",
    ]
    if let oidc {
      var o: [String: Any] = ["issuer": oidc.issuer, "audience": oidc.audience, "scopes": oidc.scopes]
      if let c = oidc.clientID { o["client_id"] = c }
      object["oidc"] = o
    }
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
  }
}
