import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI

/// Runs `body` with an audit API client over mTLS to the test gateway: the operator's client certificate
/// unless `certificate` and `key` (PEM paths) name another identity.
func withAudit<R: Sendable>(
  _ gw: TestGateway, certificate: String? = nil, key: String? = nil,
  _ body: (Openshell_Audit_V1_AuditService.Client<HTTP2ClientTransport.Posix>) async throws -> R
) async throws -> R {
  let security = HTTP2ClientTransport.Posix.TransportSecurity.mTLS(
    certificateChain: [.file(path: certificate ?? gw.pki + "/client.crt", format: .pem)],
    privateKey: .file(path: key ?? gw.pki + "/client.key", format: .pem)
  ) { $0.trustRoots = .certificates([.file(path: gw.pki + "/ca.crt", format: .pem)]) }
  let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: gw.port), transportSecurity: security)
  return try await withGRPCClient(transport: transport) { client in
    try await body(Openshell_Audit_V1_AuditService.Client(wrapping: client))
  }
}
