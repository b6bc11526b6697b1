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

/// A running gateway: the store, the server and its bound port.
public final class RunningGateway: Sendable {
  /// The store: the log, its projection and the commands that append to it.
  public let store: GatewayStore
  /// The server on the gateway's one port (gRPC and HTTP).
  public let server: GatewayServer
  /// The gateway's certificates; nil for a plaintext gateway.
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
      sandboxCertificateLifetime: configuration.sandboxCertificateLifetime, readyTimeout: configuration.supervisorReadyTimeout)
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
  serverConfig.rpcTasksOnEventLoop = configuration.rpcTasksOnEventLoop
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
