import Crypto
import Foundation
import SwiftASN1
import X509

/// Builds the gateway's certificates with swift-certificates: ECDSA P-256 keys, ecdsa-with-SHA256
/// signatures, X.509 v3 (RFC 5280). Layout follows reference/swift-build-notes.md §5.1, which was
/// verified against Swift, OpenSSL and Python grpcio clients.
enum CertificateFactory {
  /// Validity of the CA: 10 years (3,650 days).
  static let caValidity: TimeInterval = 3650 * 86_400
  /// Validity of the server and operator leaves: 825 days (the CA/Browser Forum's former maximum for
  /// TLS leaves, accepted by every TLS client we target).
  static let leafValidity: TimeInterval = 825 * 86_400
  /// Every certificate starts 5 minutes before "now" to tolerate clock skew between hosts.
  static let backdating: TimeInterval = 5 * 60

  static let organization = "openshell"
  static let caCommonName = "openshell-gateway-ca"
  static let serverCommonName = "openshell-gateway"
  static let operatorCommonName = "openshell-operator"

  /// A freshly generated key and certificate.
  struct KeyedCertificate {
    var certificate: Certificate
    var key: P256.Signing.PrivateKey
  }

  /// Creates the self-signed CA: critical BasicConstraints CA (path length 0), critical KeyUsage
  /// digitalSignature/keyCertSign/cRLSign, SubjectKeyIdentifier.
  static func makeCA(now: Date) throws -> KeyedCertificate {
    let key = P256.Signing.PrivateKey()
    let privateKey = Certificate.PrivateKey(key)
    let name = try DistinguishedName {
      OrganizationName(organization)
      CommonName(caCommonName)
    }
    let extensions = try Certificate.Extensions {
      Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
      Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
      SubjectKeyIdentifier(hash: privateKey.publicKey)
    }
    let certificate = try Certificate(
      version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: privateKey.publicKey,
      notValidBefore: now - backdating, notValidAfter: now + caValidity,
      issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
      extensions: extensions, issuerPrivateKey: privateKey)
    return KeyedCertificate(certificate: certificate, key: key)
  }

  /// What kind of leaf to issue.
  enum LeafProfile {
    case server(sans: [GeneralName])
    case operatorClient
    case sandboxClient(id: String, lifetime: TimeInterval)
  }

  /// Issues a leaf signed by the CA: critical BasicConstraints not-CA, critical KeyUsage
  /// digitalSignature, EKU serverAuth or clientAuth, SKI, and AKI equal to the CA's SKI.
  static func makeLeaf(
    _ profile: LeafProfile, ca: Certificate, caKey: P256.Signing.PrivateKey, now: Date
  ) throws -> KeyedCertificate {
    let key = P256.Signing.PrivateKey()
    let privateKey = Certificate.PrivateKey(key)
    let subject: DistinguishedName
    let usage: ExtendedKeyUsage.Usage
    let validity: TimeInterval
    var sans: [GeneralName] = []
    switch profile {
    case .server(let names):
      subject = try DistinguishedName {
        OrganizationName(organization)
        CommonName(serverCommonName)
      }
      usage = .serverAuth
      validity = leafValidity
      sans = names
    case .operatorClient:
      subject = try DistinguishedName {
        OrganizationName(organization)
        OrganizationalUnitName("operator")
        CommonName(operatorCommonName)
      }
      usage = .clientAuth
      validity = leafValidity
    case .sandboxClient(let id, let lifetime):
      subject = try DistinguishedName {
        OrganizationName(organization)
        OrganizationalUnitName("sandbox")
        CommonName("sandbox:\(id)")
      }
      usage = .clientAuth
      validity = lifetime
    }
    let caSKI =
      try ca.extensions.subjectKeyIdentifier?.keyIdentifier
      ?? SubjectKeyIdentifier(hash: ca.publicKey).keyIdentifier
    let extensions = try Certificate.Extensions {
      Critical(BasicConstraints.notCertificateAuthority)
      Critical(KeyUsage(digitalSignature: true))
      try ExtendedKeyUsage([usage])
      SubjectKeyIdentifier(hash: privateKey.publicKey)
      AuthorityKeyIdentifier(keyIdentifier: caSKI)
      if !sans.isEmpty {
        SubjectAlternativeNames(sans)
      }
    }
    let certificate = try Certificate(
      version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: privateKey.publicKey,
      notValidBefore: now - backdating, notValidAfter: now + validity,
      issuer: ca.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
      extensions: extensions, issuerPrivateKey: Certificate.PrivateKey(caKey))
    return KeyedCertificate(certificate: certificate, key: key)
  }

  /// The public description of `certificate` for `CertificateIssued` events.
  static func describe(_ certificate: Certificate, role: CertificateRole) throws -> CertificateIssuance {
    CertificateIssuance(
      role: role,
      subject: certificate.subject.description,
      issuer: certificate.issuer.description,
      fingerprintSHA256: try fingerprint(certificate),
      serialHex: Hex.encode(certificate.serialNumber.bytes),
      notBefore: certificate.notValidBefore,
      notAfter: certificate.notValidAfter,
      subjectAlternativeNames: try subjectAlternativeNameStrings(certificate))
  }

  /// Lower-case hex SHA-256 of the DER encoding.
  static func fingerprint(_ certificate: Certificate) throws -> String {
    var serializer = DER.Serializer()
    try serializer.serialize(certificate)
    return Hex.encode(SHA256.hash(data: serializer.serializedBytes))
  }

  /// SANs rendered as `DNS:name` / `IP:address`; other name forms are rendered by swift-certificates.
  static func subjectAlternativeNameStrings(_ certificate: Certificate) throws -> [String] {
    guard let sans = try certificate.extensions.subjectAlternativeNames else { return [] }
    return sans.map { name in
      switch name {
      case .dnsName(let dns): return "DNS:\(dns)"
      case .ipAddress(let octets): return "IP:\(HostAddress.format(Array(octets.bytes)) ?? "?")"
      default: return String(describing: name)
      }
    }
  }

  /// The value of the first attribute of `type` (e.g. `.RDNAttributeType.commonName`) in `name`.
  static func attribute(_ type: ASN1ObjectIdentifier, in name: DistinguishedName) -> String? {
    for rdn in name {
      for attribute in rdn where attribute.type == type {
        return String(attribute.value) ?? String(describing: attribute.value)
      }
    }
    return nil
  }
}

/// Lower-case hexadecimal encoding.
enum Hex {
  static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in bytes {
      out.append(digits[Int(byte >> 4)])
      out.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
  }
}
