import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import RelayTransport

/// gRPC access to a gateway (`openshell.v1.OpenShell`) with the registration's TLS files.
enum GatewayClient {
  /// TLS of a registration: the server certificate must chain to the registration's CA and name the
  /// host dialled (a DNS name, or an IP address SAN). An mTLS registration never falls back to the
  /// system's trust roots: a missing `ca.crt` is an error (only a TLS registration without a stored CA,
  /// e.g. a gateway behind a public reverse proxy, uses the system roots).
  /// - Throws: `CLIError` when an mTLS registration has no CA file.
  static func transportSecurity(_ t: Target) throws -> HTTP2ClientTransport.Posix.TransportSecurity {
    guard t.tls else { return .plaintext }
    if let cert = t.certPath, let key = t.keyPath {
      guard let ca = t.caPath else {
        throw CLIError(
          "the registration of \(t.endpoint) has a client certificate but no ca.crt; add the gateway again (openshell gateway add … --local, or gateway start)")
      }
      return .mTLS(certificateChain: [.file(path: cert, format: .pem)], privateKey: .file(path: key, format: .pem)) { c in
        c.trustRoots = .certificates([.file(path: ca, format: .pem)])
        c.serverCertificateVerification = .fullVerification
      }
    }
    let roots: TLSConfig.TrustRootsSource = t.caPath.map { .certificates([.file(path: $0, format: .pem)]) } ?? .systemDefault
    return .tls { c in
      c.trustRoots = roots
      c.serverCertificateVerification = .fullVerification
    }
  }

  static func withClient<R: Sendable>(_ t: Target, _ body: @Sendable (Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>) async throws -> R) async throws
    -> R
  {
    try await withConnection(t) { client in try await body(Openshell_V1_OpenShell.Client(wrapping: client)) }
  }

  /// Runs `body` with one HTTP/2 connection to the registration's endpoint (any service on the port:
  /// `openshell.v1`, inference, audit), with the registration's TLS.
  /// `bearer` overrides the registration's stored token (used to check a new token before it is stored).
  static func withConnection<R: Sendable>(
    _ t: Target, bearer: String? = nil, _ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> R
  ) async throws -> R {
    // Whole HTTP/2 frames per read: a bulk stream (`ssh-proxy`, downloads) otherwise costs a page fault per 4 KiB.
    let config = HTTP2ClientTransport.Posix.Config.defaults { $0.channelDebuggingCallbacks.onCreateTCPConnection = { HTTP2FrameAligner.install(on: $0) } }
    let transport =
      t.host.allSatisfy({ $0.isNumber || $0 == "." })
      ? try HTTP2ClientTransport.Posix(target: .ipv4(address: t.host, port: t.port), transportSecurity: transportSecurity(t), config: config)
      : try HTTP2ClientTransport.Posix(target: .dns(host: t.host, port: t.port), transportSecurity: transportSecurity(t), config: config)
    // OIDC registrations present their access token (refreshed first when it is about to expire).
    var token = bearer
    if token == nil, t.authMode == "oidc" { token = try await BearerTokens.current(gateway: t.name) }
    let interceptors: [any ClientInterceptor] = token.map { [BearerClientInterceptor(token: $0)] } ?? []
    return try await withGRPCClient(transport: transport, interceptors: interceptors) { client in try await body(client) }
  }

  static func options(timeout: Duration = .seconds(5)) -> CallOptions {
    var o = CallOptions.defaults
    o.timeout = timeout
    o.waitForReady = false
    return o
  }

  /// gRPC Health: (serving?, version).
  static func health(_ t: Target, timeout: Duration = .seconds(5)) async throws -> (Bool, String) {
    try await withClient(t) { c in
      let r = try await c.health(Openshell_V1_HealthRequest(), options: options(timeout: timeout))
      return (r.status == .healthy, r.version)
    }
  }

  /// Before talking to an https gateway with a stored CA: if the server's certificate is not signed by
  /// that CA, the gateway's CA changed (e.g. `gateway start --recreate`); say so with the fix, instead
  /// of the generic TLS failure the call would produce. Returns nil when the CA matches or the server
  /// cannot be reached (the caller's own call then reports that).
  static func caChangeMessage(_ t: Target, type: String?) async -> String? {
    guard t.tls, let caPath = t.caPath, let stored = try? CertInfo.load(caPath) else { return nil }
    guard let chain = try? await HTTPProbe.serverChain(host: t.host, port: t.port),
      let leafDER = chain.first, let leaf = try? CertInfo(der: leafDER)
    else { return nil }
    if stored.signed(leaf) || chain.contains(stored.der) { return nil }
    var serverCA = ""
    if chain.count > 1, let ca = try? CertInfo(der: chain[chain.count - 1]) { serverCA = ", server's CA \(shortFingerprint(ca.fingerprint))" }
    let fix =
      type == "local" || type == nil
      ? "openshell gateway add \(t.endpoint) --name \(t.name) --local --force"
      : "openshell gateway add \(t.endpoint) --name \(t.name) --force"
    return "gateway '\(t.name)' (\(t.endpoint)) CA changed: the server's certificate is not signed by the stored CA "
      + "\(shortFingerprint(stored.fingerprint))\(serverCA) (was the gateway recreated?); refresh the stored certificates with: \(fix)"
  }
}
