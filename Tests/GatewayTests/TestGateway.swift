import EventLog
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Gateway
import OpenShellAPI
import Testing

/// A real gateway (real LMDB log, real mTLS) started in-process on 127.0.0.1:<ephemeral port>.
final class TestGateway: @unchecked Sendable {
  let dataDirectory: String
  let running: RunningGateway
  let port: Int
  let task: Task<Void, Error>

  static func start(
    dataDirectory: String? = nil, security: GatewaySecurityMode = .mutualTLS, shutdownGracePeriod: Duration = .seconds(2),
    configure: (inout GatewayConfiguration) -> Void = { _ in }
  ) async throws -> TestGateway {
    let dir = dataDirectory ?? FileManager.default.temporaryDirectory.appendingPathComponent("gw-\(UUID().uuidString)").path
    var config = GatewayConfiguration(dataDirectory: dir)
    config.port = 0
    config.security = security
    config.handleSignals = false
    config.shutdownGracePeriod = shutdownGracePeriod
    config.computeDriver = "none"  // these tests cover the service without running sandboxes
    configure(&config)
    let (stream, continuation) = AsyncStream<(RunningGateway, Int)>.makeStream()
    let task = Task { try await serve(config) { running, port in continuation.yield((running, port)) } }
    for await (running, port) in stream {
      return TestGateway(dataDirectory: dir, running: running, port: port, task: task)
    }
    _ = try await task.value
    throw CancellationError()
  }

  private init(dataDirectory: String, running: RunningGateway, port: Int, task: Task<Void, Error>) {
    self.dataDirectory = dataDirectory
    self.running = running
    self.port = port
    self.task = task
  }

  /// Stops the gateway and waits until `serve` returned (log closed).
  func stop() async {
    running.shutdown()
    _ = try? await task.value
  }

  var pki: String { dataDirectory + "/pki" }

  /// Runs `body` with a client: the operator certificate unless `certificate`/`key` are given; the
  /// transport follows the gateway's security mode (mTLS, TLS without client certificate, plaintext).
  func withClient<R: Sendable>(
    certificate: String? = nil, key: String? = nil,
    _ body: (Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>) async throws -> R
  ) async throws -> R {
    let cert = certificate ?? pki + "/client.crt"
    let key = key ?? pki + "/client.key"
    let pki = self.pki
    let security: HTTP2ClientTransport.Posix.TransportSecurity
    switch running.server.configuration.security {
    case .mutualTLS:
      security = .mTLS(certificateChain: [.file(path: cert, format: .pem)], privateKey: .file(path: key, format: .pem)) {
        $0.trustRoots = .certificates([.file(path: pki + "/ca.crt", format: .pem)])
      }
    case .tls:
      security = .tls { $0.trustRoots = .certificates([.file(path: pki + "/ca.crt", format: .pem)]) }
    case .plaintext:
      security = .plaintext
    }
    let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: security)
    return try await withGRPCClient(transport: transport) { client in
      try await body(Openshell_V1_OpenShell.Client(wrapping: client))
    }
  }

  /// Writes a sandbox client certificate (`CN=sandbox:<id>, OU=sandbox`); returns (cert, key) paths.
  func sandboxCertificate(_ sandboxID: String) throws -> (String, String) {
    let issued = try running.pki!.issueSandboxCertificate(sandboxID: sandboxID)
    let dir = dataDirectory + "/test-certs"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try issued.certificatePEM.write(toFile: "\(dir)/\(sandboxID).crt", atomically: true, encoding: .utf8)
    try issued.privateKeyPEM.write(toFile: "\(dir)/\(sandboxID).key", atomically: true, encoding: .utf8)
    return ("\(dir)/\(sandboxID).crt", "\(dir)/\(sandboxID).key")
  }
}

extension Openshell_Datamodel_V1_WorkspaceSelector {
  static func ws(_ name: String) -> Self { .with { $0.workspace = name } }
  static var all: Self { .with { $0.allWorkspaces = .init() } }
}

/// The RPC error code a throwing call produced (nil if it succeeded).
func rpcCode(_ body: () async throws -> Void) async -> RPCError.Code? {
  do {
    try await body()
    return nil
  } catch let e as RPCError {
    return e.code
  } catch {
    return nil
  }
}
