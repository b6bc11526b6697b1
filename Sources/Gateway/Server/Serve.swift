import Crypto
import EventLog
import Foundation
import GRPCCore
import Logging
import Projections
import SandboxConfinement
import SandboxProtocol

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
  /// OIDC bearer tokens (`--oidc-issuer` …; issue 13); nil = none. Combines with every ``security`` mode.
  public var oidc: OIDCSettings?
  /// Extra host names or IPs the server certificate must cover (`--gateway-host`).
  public var gatewayHosts: [String] = []
  /// The host sandbox supervisors dial (and the SSH endpoint the gateway hands out): 127.0.0.1 for a
  /// wildcard bind (`0.0.0.0`, `::`), else the bind address itself. The server certificate always names
  /// it (IP or DNS SAN), because supervisors verify the gateway's host name (issue 16, TLS).
  public var supervisorDialHost: String {
    ["0.0.0.0", "::", "[::]", ""].contains(bindAddress) ? "127.0.0.1" : bindAddress
  }
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
  /// Compute driver: `local` (default; sandboxes run as supervised processes in bubblewrap namespaces,
  /// see `LocalComputeDriver`) or `none` (sandboxes stay PROVISIONING).
  public var computeDriver: String = "local"
  /// Path of the supervisor binary (`openshell-sandbox`); nil = next to this executable.
  public var supervisorBinary: String?
  /// Lifetime of SSH session tokens in seconds (0 = none; default 24 h as OpenShell).
  public var sshSessionTTLSeconds: Int64 = 86_400
  /// Test-only: the local driver behaves as on a kernel without Landlock (documented switch
  /// `OPENSHELL_TEST_DISABLE_LANDLOCK=1` in the gateway's environment; tests set this property).
  /// Ed25519 key that signs audit checkpoints (issue 12); nil = `DATA/keys/audit-checkpoint.key`.
  /// Its public key is written beside it as `audit-checkpoint.pub.pem`.
  public var checkpointKeyPath: String?
  /// Records between signed checkpoints (one more is signed at shutdown); 0 turns signing off.
  public var checkpointInterval: UInt64 = 1000
  /// Records in the log before its first zstd dictionary is trained; later ones follow at twice the count
  /// each time (``DictionaryTrainer``). 0 turns training off.
  public var dictionaryTrainingAfter: UInt64 = 10_000
  /// Refused calls with the same identity, RPC, code and reason within this window become one
  /// `audit.access_refused` event with a count (issue 12).
  public var refusalWindow: Duration = .seconds(10)
  /// Export of the audit trail as OTLP log records (``OTLPAuditExporter``); nil = none. Default:
  /// `$OPENSHELL_OTLP_ENDPOINT`.
  public var otlpExport: OTLPExportSettings? = OTLPExportSettings.fromEnvironment()
  /// Whether refused calls are recorded (``AuditInterceptor``). Only the audit benchmark turns it off, to
  /// measure its cost (`openshell-loadgen --audit-overhead`); a gateway without it is not auditable.
  public var recordRefusals = true
  public var simulateNoLandlock = ProcessInfo.processInfo.environment[ConfinementPlan.testDisableLandlockVariable] == "1"
  /// A PEM file of extra roots every sandbox's proxy trusts for upstream TLS, besides the system roots
  /// (the analogue of OpenShell's operator-installed CAs in the supervisor's trust store: private or
  /// corporate CAs, and tests' own CA). Default: `$OPENSHELL_UPSTREAM_CA_FILE`; nil = system roots only.
  public var upstreamTrustFile: String? = ProcessInfo.processInfo.environment["OPENSHELL_UPSTREAM_CA_FILE"].flatMap { $0.isEmpty ? nil : $0 }
  /// How long a supervisor session may stay silent before another session of the same instance may supersede
  /// it (``SessionArbitration``); supervisors send a heartbeat every 10 s. Default 25 s.
  public var supervisorStaleAfter: Duration = .seconds(25)
  /// Validity of each sandbox's client certificate, in seconds; the local driver renews it at 2/3 of this
  /// without restarting the sandbox (``SandboxCertificateRenewal``). Default 30 days; tests use seconds.
  public var sandboxCertificateLifetime: TimeInterval = GatewayPKI.defaultSandboxCertificateLifetime

  public init(dataDirectory: String) {
    self.dataDirectory = dataDirectory
  }

  /// `mtls`, `tls` or `plaintext`, with `+oidc` when bearer tokens are accepted (recorded in
  /// `gateway.configured`, so switching OIDC on or off is in the log).
  var authModeName: String {
    let base = GatewayAuthDescription(security: security, oidc: nil).transport
    return oidc == nil ? base : base + "+oidc"
  }
}

/// A running gateway: the store, the server and its bound port.
public final class RunningGateway: Sendable {
  public let store: GatewayStore
  public let server: GatewayServer
  public let pki: GatewayPKI?
  /// The local compute driver, when configured.
  public let driver: LocalComputeDriver?

  init(store: GatewayStore, server: GatewayServer, pki: GatewayPKI?, driver: LocalComputeDriver? = nil) {
    self.store = store
    self.server = server
    self.pki = pki
    self.driver = driver
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
/// - Throws: `GatewayServerError.portInUse`, ``GatewayStartupError`` (a damaged or missing log, see
///   ``LogStartup``), `EventLogError` (e.g. `.locked` when another gateway uses the data dir), `GatewayPKIError`.
public func serve(_ configuration: GatewayConfiguration, onReady: (@Sendable (RunningGateway, Int) -> Void)? = nil) async throws {
  let logger = Logger(label: "openshell.gateway")
  let serveStarted = ContinuousClock.now
  let fm = FileManager.default
  try fm.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
  DescriptorLimit.raiseToHard(logger: logger)
  let metrics = GatewayMetrics()
  try configuration.otlpExport?.validate()
  // Checked before anything else: a damaged, empty or missing log is refused with one message.
  let (log, store) = try LogStartup.open(
    dataDirectory: configuration.dataDirectory, options: configuration.logOptions, metrics: metrics, logger: logger)
  defer { log.close() }
  let exportFrom = log.headSeq + 1
  // The PKI exists in every mode so that switching modes keeps the same CA.
  // The server certificate also names the address sandbox supervisors dial (they verify it).
  let pki = try GatewayPKI.loadOrCreate(
    directory: configuration.dataDirectory + "/pki", gatewayHosts: configuration.gatewayHosts + [configuration.supervisorDialHost])
  try await recordStartup(store: store, configuration: configuration, pki: pki)
  metrics.setHeadSeq(log.headSeq)

  let hub = try SupervisorHub(
    logDirectory: configuration.dataDirectory + "/sandbox-logs",
    tokenKeyPath: configuration.dataDirectory + "/pki/sandbox-token.key", staleAfter: configuration.supervisorStaleAfter)
  // Provider credentials and sandbox environments: master key in DATA/keys (outside the log dir);
  // orphaned data keys are shredded.
  let vault = try SecretVault(directory: configuration.dataDirectory + "/keys")
  DataKeyJanitor.shredOrphans(vault: vault, state: await store.state)
  let driver: LocalComputeDriver? =
    configuration.computeDriver == "local"
    ? LocalComputeDriver(
      dataDirectory: configuration.dataDirectory, pki: pki, hub: hub, vault: vault,
      usesTLS: configuration.security.usesTLS, supervisorBinary: configuration.supervisorBinary,
      simulateNoLandlock: configuration.simulateNoLandlock, upstreamTrustFile: configuration.upstreamTrustFile,
      sandboxCertificateLifetime: configuration.sandboxCertificateLifetime)
    : nil
  // The genuine supervisor of each sandbox is the instance the driver launched (session takeovers, issue 17).
  if let driver { hub.setExpectedInstance { id in driver.loadInstance(id)?.instanceID } }
  let delivery = ProviderDelivery(store: store, vault: vault, hub: hub)
  let sshSettings = SSHTunnelSettings(sessionTTLSeconds: configuration.sshSessionTTLSeconds)
  let service = OpenShellService(
    store: store, driver: driver, version: gatewayVersion, hub: hub, vault: vault, ssh: sshSettings)
  let inference = InferenceService(store: store, vault: vault, hub: hub)
  let registry = PeerCertificateRegistry()
  // Refused calls are aggregated per (identity, RPC, code, reason) per window before they are logged.
  let refusals = RefusalAggregator(log: log, window: configuration.refusalWindow)
  var serverConfig = GatewayServer.Configuration(host: configuration.bindAddress, port: configuration.port, security: configuration.security)
  serverConfig.shutdownGracePeriod = configuration.shutdownGracePeriod
  serverConfig.handleSignals = configuration.handleSignals
  serverConfig.oidc = configuration.oidc
  var interceptors: [any ServerInterceptor] = [IdentityInterceptor(registry: registry), SandboxTokenInterceptor()]
  if let oidc = configuration.oidc {
    let verifier = BearerVerifier(settings: oidc)
    interceptors.append(BearerAuthInterceptor(verifier: verifier, refusals: refusals))
    // Bearer tokens are replayable operator credentials: say loudly when they would cross a network in clear
    // (the CLI refuses to send them to a non-loopback http:// gateway).
    if configuration.security == .plaintext, !["127.0.0.1", "::1", "localhost"].contains(configuration.bindAddress) {
      logger.warning(
        "SECURITY: bearer tokens reach this --plaintext gateway in cleartext on \(configuration.bindAddress); put a TLS-terminating proxy in front of it and bind it to 127.0.0.1"
      )
    }
    // Early word on a misconfigured or unreachable issuer; the gateway serves anyway and fetches again later.
    if let problem = await verifier.prefetch() {
      logger.warning("OIDC issuer \(oidc.issuer) not usable yet (bearer tokens are refused until it is): \(problem)")
    } else {
      logger.info("OIDC bearer tokens accepted from \(oidc.issuer) for audience \(oidc.audience)")
    }
  }
  if configuration.recordRefusals { interceptors.append(AuditInterceptor(refusals: refusals)) }
  // Clients refused before any RPC (TLS handshake) go through the same aggregation, in the order they were
  // refused (one consumer: a window's first peer and first claimed subject are the first refusal's), and all of
  // them before the flush at shutdown.
  var handshakeRefusals: HandshakeRefusalSink?
  let (handshakeQueue, handshakeInput) = AsyncStream<HandshakeRefusal>.makeStream()
  defer { handshakeInput.finish() }  // also when serving fails: the consumer ends
  let handshakeConsumer = Task {
    for await r in handshakeQueue {
      await refusals.refused(
        identity: r.identity, peer: r.peer, rpc: HandshakeRefusal.rpc, code: HandshakeRefusal.code, reason: r.reason,
        claimedSubject: r.claimedSubject)
    }
  }
  if configuration.recordRefusals {
    handshakeRefusals = { (r: HandshakeRefusal) in handshakeInput.yield(r) }
  }
  interceptors += [MetricsInterceptor(metrics: metrics), MessageSizeInterceptor(limit: serverConfig.maxRequestMessageBytes)]
  let server = try GatewayServer(
    configuration: serverConfig, pki: pki, services: [service, inference, AuditService(log: log), SandboxAuditReportsService(service: service)],
    interceptors: interceptors,
    readiness: { .ready(version: gatewayVersion, headSeq: log.headSeq) },
    metrics: metrics, peerRegistry: registry,
    serviceRouter: ServiceRouter(store: store, hub: hub, registry: registry, requireCertificate: configuration.security == .mutualTLS),
    handshakeRefusals: handshakeRefusals,
    logger: logger)
  let running = RunningGateway(store: store, server: server, pki: pki, driver: driver)
  let signer =
    try configuration.checkpointInterval == 0
    ? nil
    : CheckpointSigner(
      store: store,
      key: CheckpointKey.loadOrCreate(path: configuration.checkpointKeyPath ?? configuration.dataDirectory + "/keys/audit-checkpoint.key"),
      interval: configuration.checkpointInterval)
  // Before serving: vouch for everything recorded so far (after a crash, the records since the last checkpoint).
  await signer?.signHead()
  try await withThrowingTaskGroup(of: Bool.self) { group in
    group.addTask {
      try await server.run()
      return true
    }
    group.addTask {
      await delivery.run()
      return false
    }
    group.addTask {
      await inference.run()
      return false
    }
    group.addTask {
      await SandboxEnvironmentShredder(store: store, vault: vault).run()
      return false
    }
    if let signer {
      group.addTask {
        await signer.run()
        return false
      }
    }
    group.addTask {
      await DictionaryTrainer(log: log, firstAfter: configuration.dictionaryTrainingAfter).run()
      return false
    }
    if let otlp = configuration.otlpExport {
      group.addTask {
        await OTLPAuditExporter(log: log, settings: otlp, metrics: metrics, from: exportFrom).run()
        return false
      }
    }
    group.addTask {
      for _ in 0..<500 {
        if let port = await server.listeningPort {
          let host = configuration.supervisorDialHost
          let scheme = configuration.security.usesTLS ? "https" : "http"
          sshSettings.setEndpoint(host: host, port: port, scheme: scheme)
          if let driver {
            driver.setEndpoint("\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(port)")
          }
          logger.info("serving on port \(port), \(LogStartup.milliseconds(ContinuousClock.now - serveStarted)) ms after start")
          onReady?(running, port)
          break
        }
        try await Task.sleep(for: .milliseconds(10))
      }
      if let driver { try await driver.run(store: store) }
      return false
    }
    // The server ending ends the gateway (the driver stops reacting; sandboxes keep running).
    while let serverDone = try await group.next() {
      if serverDone { group.cancelAll(); break }
    }
  }
  if let driver {
    let busy = await driver.drain(timeout: .seconds(5))
    if busy > 0 { logger.warning("\(busy) sandbox(es) still being started or stopped at shutdown; the next start finishes them") }
  }
  handshakeInput.finish()
  await handshakeConsumer.value
  await refusals.flush()
  await service.supervisorSessions.flush()
  await signer?.signHead()
  await store.snapshot()
  logger.info("gateway stopped at seq \(log.headSeq)")
}

/// Records initialisation, configuration changes and new certificate issuances as events.
func recordStartup(store: GatewayStore, configuration c: GatewayConfiguration, pki: GatewayPKI) async throws {
  let state = await store.state
  var events: [GatewayEvent] = []
  if state.gateway == nil {
    let gatewayID = RandomID.uuid()
    events.append(
      GatewayEvent(
        .gatewayInitialized(
          .with {
            $0.gatewayName = c.gatewayName
            $0.gatewayID = gatewayID
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
    || g!.registryUsername != configured.registryUsername || g!.gatewayHosts != configured.gatewayHosts
  {
    events.append(GatewayEvent(.gatewayConfigured(configured)))
  }
  // Every certificate in use that the log does not know: those issued this start, and after a restore the
  // current PKI, which the restored log has never seen.
  let issued = Set(pki.issuedThisStart.map(\.fingerprintSHA256))
  let inUse = ((try? pki.certificatesInUse()) ?? []).filter { !issued.contains($0.fingerprintSHA256) }
  for issuance in pki.issuedThisStart + inUse where state.certificates[issuance.fingerprintSHA256] == nil {
    events.append(
      GatewayEvent(
        .certificateIssued(
          .with {
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
