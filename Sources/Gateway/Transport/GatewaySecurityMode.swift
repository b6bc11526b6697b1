import Foundation
import NIOSSL

/// How the gateway port is secured (DESIGN.md §4; OpenShell's `--disable-gateway-auth` and
/// `--disable-tls`, openshell-behavior.md §2.2 and §3).
public enum GatewaySecurityMode: String, Sendable, Hashable, CaseIterable {
  /// Default: TLS, and every client must present a certificate that chains to the gateway CA
  /// (RFC 8446 §4.3.2 CertificateRequest). gRPC and HTTP alike.
  case mutualTLS
  /// `--disable-gateway-auth`: TLS with the gateway's server certificate, no client certificate is
  /// requested; every caller is ``CallerIdentity/anonymous``.
  case tls
  /// `--plaintext`: no TLS (for a TLS-terminating proxy in front): prior-knowledge h2c gRPC and HTTP/1.1.
  case plaintext

  /// Whether the port speaks TLS.
  public var usesTLS: Bool { self != .plaintext }
}

/// Builds the server-side `NIOSSLContext` for the one-port listener.
enum GatewayTLS {
  /// ALPN protocols in server-preference order (RFC 7301 §3.2: the server selects). `http/1.1` first so
  /// curl and browsers (offering `h2, http/1.1`) get HTTP/1.1 instead of reaching gRPC over HTTP/2 and
  /// receiving 415; gRPC clients offer only `h2` (grpcio) or `grpc-exp, h2` (grpc-swift) and get `h2`,
  /// which grpcio requires (swift-build-notes.md §5.5, §6.3).
  static let applicationProtocols = ["http/1.1", "h2"]

  /// TLS 1.2 minimum (RFC 8446 is preferred when the client offers it).
  static func makeContext(mode: GatewaySecurityMode, pki: GatewayPKI) throws -> NIOSSLContext {
    let chain = try NIOSSLCertificate.fromPEMFile(pki.serverCertificatePath).map { NIOSSLCertificateSource.certificate($0) }
    let key = try NIOSSLPrivateKey(file: pki.serverKeyPath, format: .pem)
    var configuration = TLSConfiguration.makeServerConfiguration(
      certificateChain: chain, privateKey: .privateKey(key))
    configuration.minimumTLSVersion = .tlsv12
    configuration.applicationProtocols = applicationProtocols
    switch mode {
    case .mutualTLS:
      configuration.certificateVerification = .noHostnameVerification
      configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(pki.caCertificatePath))
    case .tls, .plaintext:
      configuration.certificateVerification = .none
    }
    return try NIOSSLContext(configuration: configuration)
  }
}
