import Crypto
import Foundation
import X509

/// Facts about a PEM certificate for `gateway info`, `doctor check` and CA-change detection.
struct CertInfo {
  let certificate: Certificate
  let der: [UInt8]

  init(pem: String) throws {
    certificate = try Certificate(pemEncoded: pem)
    let body = pem.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
      .drop { !$0.hasPrefix("-----BEGIN CERTIFICATE") }.dropFirst().prefix { !$0.hasPrefix("-----END") }.joined()
    guard let d = Data(base64Encoded: body) else { throw CLIError("not a PEM certificate") }
    der = Array(d)
  }

  init(der: [UInt8]) throws {
    certificate = try Certificate(derEncoded: der)
    self.der = der
  }

  static func load(_ path: String) throws -> CertInfo {
    guard let pem = try? String(contentsOfFile: path, encoding: .utf8) else { throw CLIError("cannot read \(path)") }
    do { return try CertInfo(pem: pem) } catch { throw CLIError("\(path) is not a PEM certificate") }
  }

  /// Lower-case hex SHA-256 of the DER encoding (as the gateway records it).
  var fingerprint: String { SHA256.hash(data: der).map { String(format: "%02x", $0) }.joined() }
  var notAfter: Date { certificate.notValidAfter }
  var notBefore: Date { certificate.notValidBefore }
  var subject: String { certificate.subject.description }

  /// True when this certificate (a CA) signed `leaf`.
  func signed(_ leaf: CertInfo) -> Bool {
    leaf.certificate.issuer == certificate.subject
      && certificate.publicKey.isValidSignature(leaf.certificate.signature, for: leaf.certificate)
  }

  var validNow: Bool { Date() >= notBefore && Date() < notAfter }
}

/// `ab:cd:…` short form for display: the first 16 hex digits.
func shortFingerprint(_ f: String) -> String { String(f.prefix(16)) }
