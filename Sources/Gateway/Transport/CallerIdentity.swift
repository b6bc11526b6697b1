import Foundation
import X509

/// Who is calling, derived from the TLS client certificate the server verified against the gateway CA.
///
/// Rules (wire-contract.md §10.2, DESIGN.md §4):
/// - `OU=operator` → ``Kind-swift.enum/operator`` (CLI/SDK; may call operator-only RPCs such as
///   GetProviderCredentials);
/// - `OU=sandbox` and `CN=sandbox:<id>` → ``Kind-swift.enum/sandbox(id:)`` (supervisor-facing RPCs, for
///   itself only);
/// - any other CA-signed certificate → ``Kind-swift.enum/user``;
/// - no certificate (``GatewaySecurityMode/tls`` or ``GatewaySecurityMode/plaintext``) →
///   ``Kind-swift.enum/anonymous``.
public struct CallerIdentity: Sendable, Hashable, CustomStringConvertible {
  /// The kind of principal.
  public enum Kind: Sendable, Hashable {
    case `operator`
    case sandbox(id: String)
    case user
    case anonymous
  }

  /// The kind of principal.
  public var kind: Kind
  /// The certificate subject in RFC 4514 form (e.g. `CN=openshell-operator,OU=operator,O=openshell`),
  /// or `""` for anonymous callers.
  public var subject: String
  /// Lower-case hex SHA-256 of the client certificate's DER encoding; nil without a certificate.
  public var fingerprint: String?
  /// The certificate's common name, if any.
  public var commonName: String?
  /// The `sub` of the verified OIDC bearer token the caller presented (issue 13); nil without one.
  /// Such a caller is an operator (kind ``Kind-swift.enum/operator``) whose actor is `oidc:<sub>`.
  public var oidcSubject: String?

  /// An identity with these parts (tests and the certificate initializer below).
  public init(kind: Kind, subject: String, fingerprint: String?, commonName: String? = nil) {
    self.kind = kind
    self.subject = subject
    self.fingerprint = fingerprint
    self.commonName = commonName
  }

  /// A caller authenticated by a verified OIDC bearer token (``BearerAuthInterceptor``): an operator
  /// without certificate details, whose actor is `oidc:<sub>`.
  public init(oidcSubject: String) {
    self.init(kind: .operator, subject: "", fingerprint: nil)
    self.oidcSubject = oidcSubject
  }

  /// The unauthenticated caller.
  public static let anonymous = CallerIdentity(kind: .anonymous, subject: "", fingerprint: nil)

  /// The actor string recorded in every event the caller causes (DESIGN.md §1):
  /// `operator:CN=<cn>/sha256:<fingerprint>`, `sandbox:<id>`, `user:CN=<cn>/sha256:<fingerprint>`,
  /// `oidc:<sub>` (bearer token), or `anonymous`. The fingerprint is the full 64-hex-digit SHA-256.
  public var actor: String {
    if let oidcSubject { return "oidc:\(oidcSubject)" }
    switch kind {
    case .operator: return "operator:CN=\(commonName ?? "")/sha256:\(fingerprint ?? "")"
    case .sandbox(let id): return "sandbox:\(id)"
    case .user: return "user:CN=\(commonName ?? "")/sha256:\(fingerprint ?? "")"
    case .anonymous: return "anonymous"
    }
  }

  /// The ``actor`` string.
  public var description: String { actor }

  /// Whether the caller is the operator.
  public var isOperator: Bool { kind == .operator }

  /// The sandbox id when the caller is a sandbox supervisor.
  public var sandboxID: String? {
    if case .sandbox(let id) = kind { return id }
    return nil
  }

  /// Derives the identity from a client certificate that TLS already verified against the gateway CA.
  /// Does not verify anything itself.
  public init(verifiedClientCertificate certificate: Certificate) {
    let ou = CertificateFactory.attribute(.RDNAttributeType.organizationalUnitName, in: certificate.subject)
    let cn = CertificateFactory.attribute(.RDNAttributeType.commonName, in: certificate.subject)
    let fingerprint = try? CertificateFactory.fingerprint(certificate)
    let kind: Kind
    if ou == "operator" {
      kind = .operator
    } else if ou == "sandbox", let cn, cn.hasPrefix("sandbox:"), cn.count > "sandbox:".count {
      kind = .sandbox(id: String(cn.dropFirst("sandbox:".count)))
    } else {
      kind = .user
    }
    self.init(
      kind: kind, subject: certificate.subject.description, fingerprint: fingerprint, commonName: cn)
  }

  /// The identity of the caller of the RPC currently running, bound by ``IdentityInterceptor``
  /// (also inside streaming response producers). ``anonymous`` outside an intercepted RPC.
  @TaskLocal public static var current: CallerIdentity = .anonymous
}
