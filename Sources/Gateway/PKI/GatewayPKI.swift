import Crypto
import Foundation
import X509

/// The gateway's certificate authority and its long-lived certificates, kept in one directory
/// (the gateway data directory's `pki/` subdirectory, mode 0700):
///
/// | file | content | mode |
/// |---|---|---|
/// | `ca.crt` / `ca.key` | self-signed CA `O=openshell, CN=openshell-gateway-ca`, 10 years | 0644 / 0600 |
/// | `server.crt` / `server.key` | server leaf, EKU serverAuth, 825 days | 0644 / 0600 |
/// | `client.crt` / `client.key` | operator leaf `OU=operator, CN=openshell-operator`, EKU clientAuth, 825 days | 0644 / 0600 |
///
/// Certificates are PEM, keys PKCS#8 PEM, all ECDSA P-256 with ecdsa-with-SHA256 signatures. Every
/// certificate's not-before lies 5 minutes in the past. Unlike OpenShell v0.0.30, which discards the CA
/// key (openshell-behavior.md §2.2), the CA key is kept so leaves can be re-issued from the same CA
/// (DESIGN.md §4): clients that trust `ca.crt` keep working across re-issues.
public struct GatewayPKI: Sendable {
  /// Leaves that expire within this interval (30 days) are re-issued at start-up.
  public static let renewalWindow: TimeInterval = 30 * 86_400

  /// The PKI directory.
  public let directory: String
  /// The CA certificate.
  public let caCertificate: Certificate
  /// The CA certificate, PEM.
  public let caCertificatePEM: String
  /// Lower-case hex SHA-256 of the CA certificate's DER encoding.
  public let caFingerprint: String
  /// End of the CA's validity.
  public let caNotAfter: Date
  /// The server certificate currently in `server.crt`.
  public let serverCertificate: Certificate
  /// Every certificate created during this `loadOrCreate` call (CA, server, operator), in creation
  /// order; empty on a restart that reused everything. Public parts only, for `CertificateIssued` events.
  public let issuedThisStart: [CertificateIssuance]

  private let caKey: P256.Signing.PrivateKey

  /// `<directory>/ca.crt`.
  public var caCertificatePath: String { Self.path(directory, "ca.crt") }
  /// `<directory>/ca.key` (0600).
  public var caKeyPath: String { Self.path(directory, "ca.key") }
  /// `<directory>/server.crt`.
  public var serverCertificatePath: String { Self.path(directory, "server.crt") }
  /// `<directory>/server.key` (0600).
  public var serverKeyPath: String { Self.path(directory, "server.key") }
  /// `<directory>/client.crt`: the operator client certificate.
  public var clientCertificatePath: String { Self.path(directory, "client.crt") }
  /// `<directory>/client.key` (0600): the operator client key.
  public var clientKeyPath: String { Self.path(directory, "client.key") }

  /// The CA, server and operator certificates this gateway uses now (whether issued this start or
  /// earlier, e.g. by another gateway whose log was restored here), described for the log.
  /// - Throws: when a certificate file cannot be read or parsed.
  public func certificatesInUse() throws -> [CertificateIssuance] {
    let client = try Certificate(pemEncoded: PKIFileStore.read(clientCertificatePath))
    return [
      try CertificateFactory.describe(caCertificate, role: .certificateAuthority),
      try CertificateFactory.describe(serverCertificate, role: .server),
      try CertificateFactory.describe(client, role: .operator),
    ]
  }

  /// Loads the PKI from `directory`, creating whatever is missing.
  ///
  /// - First start: creates the directory (0700), the CA, the server certificate and the operator
  ///   client certificate.
  /// - Restart: reuses the CA. The server certificate is re-issued from the same CA when it is missing,
  ///   unreadable, not signed by the CA, expires within ``renewalWindow``, or lacks one of the required
  ///   SANs: `DNS:localhost`, `IP:127.0.0.1`, `IP:::1`, the machine host name (gethostname(2)) and every
  ///   `gatewayHosts` entry (IP literals become IP SANs, other strings DNS SANs). The operator
  ///   certificate is re-issued under the same conditions (without the SAN rule).
  ///
  /// - Parameters:
  ///   - directory: the PKI directory, e.g. `<data dir>/pki`.
  ///   - gatewayHosts: extra names clients dial (`--gateway-host`).
  ///   - now: the issuance time (tests pass a fixed date).
  /// - Throws: ``GatewayPKIError`` when files cannot be read or written, when only one of
  ///   `ca.crt`/`ca.key` exists, when the CA key does not match, or when the CA has expired; errors
  ///   from swift-certificates when an existing file does not parse.
  public static func loadOrCreate(
    directory: String, gatewayHosts: [String], now: Date = Date()
  ) throws -> GatewayPKI {
    try PKIFileStore.ensureDirectory(directory)
    let caCertPath = path(directory, "ca.crt")
    let caKeyPath = path(directory, "ca.key")
    var issued: [CertificateIssuance] = []

    let ca: Certificate
    let caKey: P256.Signing.PrivateKey
    switch (PKIFileStore.exists(caCertPath), PKIFileStore.exists(caKeyPath)) {
    case (false, false):
      let made = try CertificateFactory.makeCA(now: now)
      try PKIFileStore.write(made.key.pemRepresentation, to: caKeyPath, mode: 0o600)
      try PKIFileStore.write(try made.certificate.serializeAsPEM().pemString, to: caCertPath, mode: 0o644)
      (ca, caKey) = (made.certificate, made.key)
      issued.append(try CertificateFactory.describe(ca, role: .certificateAuthority))
    case (true, true):
      ca = try Certificate(pemEncoded: PKIFileStore.read(caCertPath))
      caKey = try P256.Signing.PrivateKey(pemRepresentation: PKIFileStore.read(caKeyPath))
      PKIFileStore.restrict(caKeyPath, mode: 0o600)
      guard Certificate.PublicKey(caKey.publicKey) == ca.publicKey else {
        throw GatewayPKIError.caKeyMismatch(path: caKeyPath)
      }
      guard ca.notValidAfter > now else { throw GatewayPKIError.caExpired(notAfter: ca.notValidAfter) }
    default:
      throw GatewayPKIError.incompleteCA(directory: directory)
    }

    let sans = HostAddress.serverSANs(gatewayHosts: gatewayHosts)
    let server = try ensureLeaf(
      .server(sans: sans), role: .server, cert: path(directory, "server.crt"),
      key: path(directory, "server.key"), ca: ca, caKey: caKey, now: now, issued: &issued)
    _ = try ensureLeaf(
      .operatorClient, role: .operator, cert: path(directory, "client.crt"),
      key: path(directory, "client.key"), ca: ca, caKey: caKey, now: now, issued: &issued)

    return GatewayPKI(
      directory: directory, caCertificate: ca, caCertificatePEM: try ca.serializeAsPEM().pemString,
      caFingerprint: try CertificateFactory.fingerprint(ca), caNotAfter: ca.notValidAfter,
      serverCertificate: server, issuedThisStart: issued, caKey: caKey)
  }

  /// Validity of a sandbox client certificate unless configured otherwise
  /// (``GatewayConfiguration/sandboxCertificateLifetime``): 30 days.
  public static let defaultSandboxCertificateLifetime: TimeInterval = 30 * 86_400

  /// Issues a client certificate for one sandbox: `O=openshell, OU=sandbox, CN=sandbox:<id>`, EKU
  /// clientAuth, valid from 5 minutes before `now` until `now + lifetime` (default 30 days; the local
  /// driver renews it at 2/3 of its lifetime, ``SandboxCertificateRenewal``). Nothing is written to disk.
  ///
  /// - Parameters:
  ///   - sandboxID: 1–128 characters from `[A-Za-z0-9._-]`.
  ///   - lifetime: seconds from `now` to the end of validity.
  /// - Throws: ``GatewayPKIError/invalidSandboxID(_:)``; swift-certificates errors on signing failure.
  public func issueSandboxCertificate(
    sandboxID: String, now: Date = Date(), lifetime: TimeInterval = GatewayPKI.defaultSandboxCertificateLifetime
  ) throws -> IssuedCertificate {
    let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    guard (1...128).contains(sandboxID.count), sandboxID.allSatisfy(allowed.contains) else {
      throw GatewayPKIError.invalidSandboxID(sandboxID)
    }
    let made = try CertificateFactory.makeLeaf(
      .sandboxClient(id: sandboxID, lifetime: lifetime), ca: caCertificate, caKey: caKey, now: now)
    return IssuedCertificate(
      certificatePEM: try made.certificate.serializeAsPEM().pemString,
      privateKeyPEM: made.key.pemRepresentation,
      caCertificatePEM: caCertificatePEM,
      issuance: try CertificateFactory.describe(made.certificate, role: .sandbox))
  }

  // MARK: - Internals

  private static func path(_ directory: String, _ file: String) -> String {
    (directory as NSString).appendingPathComponent(file)
  }

  /// Returns the valid leaf at `cert`/`key`, or issues and writes a new one (recording it in `issued`).
  private static func ensureLeaf(
    _ profile: CertificateFactory.LeafProfile, role: CertificateRole, cert certPath: String,
    key keyPath: String, ca: Certificate, caKey: P256.Signing.PrivateKey, now: Date,
    issued: inout [CertificateIssuance]
  ) throws -> Certificate {
    if let existing = try? reusableLeaf(profile, cert: certPath, key: keyPath, ca: ca, now: now) {
      PKIFileStore.restrict(keyPath, mode: 0o600)
      return existing
    }
    let made = try CertificateFactory.makeLeaf(profile, ca: ca, caKey: caKey, now: now)
    try PKIFileStore.write(made.key.pemRepresentation, to: keyPath, mode: 0o600)
    try PKIFileStore.write(try made.certificate.serializeAsPEM().pemString, to: certPath, mode: 0o644)
    issued.append(try CertificateFactory.describe(made.certificate, role: role))
    return made.certificate
  }

  /// The existing leaf if it can be kept, nil (or a thrown parse error) if it must be re-issued.
  private static func reusableLeaf(
    _ profile: CertificateFactory.LeafProfile, cert certPath: String, key keyPath: String,
    ca: Certificate, now: Date
  ) throws -> Certificate? {
    guard PKIFileStore.exists(certPath), PKIFileStore.exists(keyPath) else { return nil }
    let certificate = try Certificate(pemEncoded: PKIFileStore.read(certPath))
    let key = try P256.Signing.PrivateKey(pemRepresentation: PKIFileStore.read(keyPath))
    guard Certificate.PublicKey(key.publicKey) == certificate.publicKey,
      certificate.issuer == ca.subject,
      ca.publicKey.isValidSignature(certificate.signature, for: certificate),
      certificate.notValidAfter > now + renewalWindow
    else { return nil }
    if case .server(let required) = profile {
      let present = Array(try certificate.extensions.subjectAlternativeNames ?? SubjectAlternativeNames())
      guard required.allSatisfy(present.contains) else { return nil }
    }
    return certificate
  }
}
