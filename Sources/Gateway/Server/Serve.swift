import Crypto
import EventLog
import Foundation
import GRPCCore
import Logging
import Projections

/// Version string reported by Health, GetGatewayInfo and /readyz.
public let gatewayVersion = "0.1.0"

/// How to run a gateway (`openshell gateway serve`).
public struct GatewayConfiguration: Sendable {
  /// Data directory: `log/` (the LMDB event log) and `pki/` (CA, server and operator certificates).
  public var dataDirectory: String
  /// Listen address (default 127.0.0.1; use 0.0.0.0 to accept remote clients).
  public var bindAddress: String = "127.0.0.1"
  /// TCP port for gRPC and HTTP (OpenShell default 8080).
  public var port: Int = 8080
  /// mTLS (default), TLS without client certificates (`--disable-gateway-auth`) or plaintext (`--plaintext`).
  public var security: GatewaySecurityMode = .mutualTLS
  /// Extra host names or IPs the server certificate must cover (`--gateway-host`).
  public var gatewayHosts: [String] = []
  public var gatewayName: String = "openshell"
  /// Recorded in the gateway's configuration events; GPU passthrough comes with the drivers.
  public var gpu = false
  public var registryUsername: String = ""
  /// Never stored: only its SHA-256 fingerprint enters the log.
  public var registryToken: String = ""
  /// Graceful shutdown deadline before in-flight RPCs are cancelled.
  public var shutdownGracePeriod: Duration = .seconds(10)
  /// Handle SIGTERM/SIGINT (off in tests that run several gateways in one process).
  public var handleSignals = true
  public var logOptions = EventLog.Options()

  public init(dataDirectory: String) {
    self.dataDirectory = dataDirectory
  }

  var authModeName: String {
    switch security {
    case .mutualTLS: "mtls"
    case .tls: "tls"
    case .plaintext: "plaintext"
    }
  }
}

/// A running gateway: the store, the server and its bound port.
public final class RunningGateway: Sendable {
  public let store: GatewayStore
  public let server: GatewayServer
  public let pki: GatewayPKI?

  init(store: GatewayStore, server: GatewayServer, pki: GatewayPKI?) {
    self.store = store
    self.server = server
    self.pki = pki
  }

  /// Begins a graceful shutdown (same as SIGTERM).
  public func shutdown() { server.requestShutdown() }
}

/// Opens (or initialises) the gateway in `configuration.dataDirectory` and serves until shut down.
///
/// First start: creates the PKI and the log, and records `gateway.initialized`, the configuration
/// and every certificate issuance (public parts only). Restart: the state is the newest snapshot
/// plus the log's tail, and the same CA is reused.
/// - Parameter onReady: called once the port is bound, with the running gateway and the port.
/// - Throws: `GatewayServerError.portInUse`, `EventLogError` (e.g. `.locked` when another gateway
///   uses the data dir), `GatewayPKIError`.
public func serve(_ configuration: GatewayConfiguration, onReady: (@Sendable (RunningGateway, Int) -> Void)? = nil) async throws {
  let logger = Logger(label: "openshell.gateway")
  let fm = FileManager.default
  try fm.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
  let log = try EventLog.open(directory: configuration.dataDirectory + "/log", options: configuration.logOptions)
  defer { log.close() }
  // The PKI exists in every mode so that switching modes keeps the same CA.
  let pki = try GatewayPKI.loadOrCreate(directory: configuration.dataDirectory + "/pki", gatewayHosts: configuration.gatewayHosts)
  let metrics = GatewayMetrics()
  let store = try GatewayStore(log: log, metrics: metrics)
  try await recordStartup(store: store, configuration: configuration, pki: pki)
  metrics.setHeadSeq(log.headSeq)

  let service = OpenShellService(store: store, driver: nil, version: gatewayVersion)
  let registry = PeerCertificateRegistry()
  var serverConfig = GatewayServer.Configuration(host: configuration.bindAddress, port: configuration.port, security: configuration.security)
  serverConfig.shutdownGracePeriod = configuration.shutdownGracePeriod
  serverConfig.handleSignals = configuration.handleSignals
  let server = try GatewayServer(
    configuration: serverConfig, pki: pki, services: [service],
    interceptors: [IdentityInterceptor(registry: registry), MetricsInterceptor(metrics: metrics)],
    readiness: { .ready(version: gatewayVersion, headSeq: log.headSeq) },
    metrics: metrics, peerRegistry: registry, logger: logger)
  let running = RunningGateway(store: store, server: server, pki: pki)
  try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await server.run() }
    if let onReady {
      group.addTask {
        for _ in 0..<500 {
          if let port = await server.listeningPort {
            onReady(running, port)
            return
          }
          try await Task.sleep(for: .milliseconds(10))
        }
      }
    }
    try await group.waitForAll()
  }
  await store.snapshot()
  logger.info("gateway stopped at seq \(log.headSeq)")
}

/// Records initialisation, configuration changes and new certificate issuances as events.
func recordStartup(store: GatewayStore, configuration c: GatewayConfiguration, pki: GatewayPKI) async throws {
  let state = await store.state
  var events: [GatewayEvent] = []
  if state.gateway == nil {
    events.append(GatewayEvent(.gatewayInitialized(.with {
      $0.gatewayName = c.gatewayName
      $0.gatewayID = UUID().uuidString.lowercased()
      $0.serverVersion = gatewayVersion
    })))
  }
  let tokenFingerprint = c.registryToken.isEmpty ? "" : SHA256.hash(data: Data(c.registryToken.utf8)).map { String(format: "%02x", $0) }.joined()
  let configured = Openshell_Events_V1_GatewayConfigured.with {
    $0.port = UInt32(c.port)
    $0.authMode = c.authModeName
    $0.gpu = c.gpu
    $0.registryUsername = c.registryUsername
    $0.registryTokenSha256 = tokenFingerprint
    $0.gatewayHosts = c.gatewayHosts
    $0.bindAddress = c.bindAddress
  }
  let g = state.gateway
  if g == nil || g!.port != configured.port || g!.authMode != configured.authMode || g!.gpu != configured.gpu
    || g!.registryUsername != configured.registryUsername || g!.gatewayHosts != configured.gatewayHosts {
    events.append(GatewayEvent(.gatewayConfigured(configured)))
  }
  for issuance in pki.issuedThisStart where state.certificates[issuance.fingerprintSHA256] == nil {
    events.append(GatewayEvent(.certificateIssued(.with {
      $0.role = issuance.role.rawValue
      $0.subject = issuance.subject
      $0.fingerprintSha256 = issuance.fingerprintSHA256
      $0.serialHex = issuance.serialHex
      $0.notBeforeNs = Int64(issuance.notBefore.timeIntervalSince1970 * 1e9)
      $0.notAfterNs = Int64(issuance.notAfter.timeIntervalSince1970 * 1e9)
      $0.subjectAltNames = issuance.subjectAlternativeNames
    })))
  }
  if !events.isEmpty { try await store.record(events) }
}
