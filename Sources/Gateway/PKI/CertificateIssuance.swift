import Foundation

/// The role a certificate plays in the gateway's PKI.
///
/// OpenShell v0.0.30 shares one client certificate between the CLI and every sandbox and discards the
/// CA key (openshell-behavior.md §2.2). This gateway instead keeps the CA key and issues distinct
/// identities: one operator certificate (`OU=operator`, wire-contract.md §10.2) and one certificate per
/// sandbox (`OU=sandbox`, `CN=sandbox:<id>`), see DESIGN.md §4.
public enum CertificateRole: String, Sendable, Hashable, Codable, CaseIterable {
  /// The self-signed gateway CA (`CN=openshell-gateway-ca`).
  case certificateAuthority = "ca"
  /// The gateway's TLS server certificate (EKU serverAuth).
  case server
  /// The operator client certificate used by the CLI and SDK (`OU=operator`, EKU clientAuth).
  case `operator`
  /// A per-sandbox client certificate (`OU=sandbox`, `CN=sandbox:<id>`, EKU clientAuth).
  case sandbox
}

/// The public description of one certificate issuance, suitable for a `CertificateIssued` event.
///
/// Holds only public facts; never any private key material.
public struct CertificateIssuance: Sendable, Hashable, Codable {
  /// What the certificate is for.
  public var role: CertificateRole
  /// The subject distinguished name in RFC 4514 form, e.g. `CN=openshell-operator,OU=operator,O=openshell`.
  public var subject: String
  /// The issuer distinguished name in RFC 4514 form.
  public var issuer: String
  /// Lower-case hex SHA-256 of the certificate's DER encoding (64 characters), as `openssl x509
  /// -fingerprint -sha256` prints it without colons.
  public var fingerprintSHA256: String
  /// Lower-case hex of the serial number's DER content bytes.
  public var serialHex: String
  /// Start of validity (UTC, second precision as stored in the certificate).
  public var notBefore: Date
  /// End of validity (UTC, second precision as stored in the certificate).
  public var notAfter: Date
  /// Subject alternative names as `DNS:<name>` or `IP:<address>` strings, in certificate order.
  public var subjectAlternativeNames: [String]

  /// A description with every field given (as read back from an issued certificate).
  public init(
    role: CertificateRole, subject: String, issuer: String, fingerprintSHA256: String,
    serialHex: String, notBefore: Date, notAfter: Date, subjectAlternativeNames: [String]
  ) {
    self.role = role
    self.subject = subject
    self.issuer = issuer
    self.fingerprintSHA256 = fingerprintSHA256
    self.serialHex = serialHex
    self.notBefore = notBefore
    self.notAfter = notAfter
    self.subjectAlternativeNames = subjectAlternativeNames
  }
}

/// A certificate issued on demand (currently: sandbox client certificates), with its key.
///
/// The gateway hands `certificatePEM` and `privateKeyPEM` to the sandbox; only `issuance` may be logged.
public struct IssuedCertificate: Sendable {
  /// The leaf certificate, PEM (`-----BEGIN CERTIFICATE-----`).
  public var certificatePEM: String
  /// The leaf's private key as a PKCS#8 PEM document. Secret: never log it.
  public var privateKeyPEM: String
  /// The CA certificate the leaf chains to, PEM (for the holder's trust store).
  public var caCertificatePEM: String
  /// Public facts about the issuance.
  public var issuance: CertificateIssuance
}

/// Errors thrown by ``GatewayPKI``.
public enum GatewayPKIError: Error, Sendable, Equatable, CustomStringConvertible {
  /// `ca.crt` exists but `ca.key` does not (or the reverse). The gateway refuses to replace a CA that
  /// clients may already trust; restore the file or move the `pki/` directory aside.
  case incompleteCA(directory: String)
  /// The CA's key does not match its certificate.
  case caKeyMismatch(path: String)
  /// The CA certificate has expired; move the `pki/` directory aside to create a new CA.
  case caExpired(notAfter: Date)
  /// A file could not be read, parsed or written.
  case file(path: String, reason: String)
  /// A sandbox id that cannot appear in a certificate subject (empty, too long, or with characters
  /// outside `[A-Za-z0-9._-]`).
  case invalidSandboxID(String)

  /// One readable line naming what is wrong (the file, directory, date or sandbox id) and, where there is one,
  /// the remedy.
  public var description: String {
    switch self {
    case .incompleteCA(let dir):
      return "incomplete CA in \(dir): ca.crt and ca.key must both exist (restore them or move the directory aside)"
    case .caKeyMismatch(let path): return "CA private key \(path) does not match ca.crt"
    case .caExpired(let notAfter): return "gateway CA expired at \(notAfter); move the pki directory aside to create a new CA"
    case .file(let path, let reason): return "\(path): \(reason)"
    case .invalidSandboxID(let id): return "invalid sandbox id for a certificate: \(id.debugDescription)"
    }
  }
}
