import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import UnixSignals

/// Errors thrown by ``GatewayServer``.
public enum GatewayServerError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The port is already bound by another process (EADDRINUSE).
  case portInUse(Int)
  /// Binding failed for another reason.
  case bindFailed(host: String, port: Int, reason: String)
  /// A TLS mode was requested without a ``GatewayPKI``, or the TLS context could not be built.
  case tlsConfiguration(String)
  /// ``GatewayServer/run()`` was called more than once.
  case alreadyRunning

  /// One line naming the port, address or reason, e.g. `port 8080 is already in use`.
  public var description: String {
    switch self {
    case .portInUse(let port): return "port \(port) is already in use"
    case .bindFailed(let host, let port, let reason): return "cannot listen on \(host):\(port): \(reason)"
    case .tlsConfiguration(let reason): return "TLS configuration error: \(reason)"
    case .alreadyRunning: return "the gateway server is already running"
    }
  }
}

/// The gateway's one port: gRPC (`openshell.v1.OpenShell` and any other registered service) and the
/// HTTP/1.1 endpoints of ``HTTPEndpoints`` on a single listener, secured per ``GatewaySecurityMode``
/// (DESIGN.md §4, swift-build-notes.md §6.3; OpenShell serves the same mix on one port,
/// openshell-behavior.md §3).
///
/// Interceptors are exactly those passed in. Pass ``IdentityInterceptor`` (so handlers can read
/// ``CallerIdentity/current``) and ``MetricsInterceptor`` (RPC counts and latencies on `/metrics`);
/// the server does not add them itself.
///
/// Shutdown: ``requestShutdown()``, SIGTERM or SIGINT (when ``Configuration/handleSignals``) start a
/// graceful shutdown: the listener closes, subscription streams end with UNAVAILABLE (see
/// ``SubscriptionDrain``), in-flight RPCs finish, idle and undecided connections are closed; after ``Configuration/shutdownGracePeriod`` whatever is left is cancelled. Cancelling the task
/// running ``run()`` stops the server at once.
public final class GatewayServer: Sendable {
  /// Listener settings.
  public struct Configuration: Sendable {
    /// Address to bind, e.g. `127.0.0.1`, `0.0.0.0` or `::`.
    public var host: String
    /// TCP port; 0 binds an ephemeral port (see ``GatewayServer/listeningPort``).
    public var port: Int
    /// TLS and client-certificate policy.
    public var security: GatewaySecurityMode
    /// In TLS modes, also answer plaintext HTTP/1.1 `/healthz` and `/readyz` on the port (`/metrics` is
    /// refused with 403; plaintext gRPC is refused). Default false.
    public var allowPlaintextProbes: Bool = false
    /// Time from a shutdown request to cancellation of what is still running. Default 10 s.
    public var shutdownGracePeriod: Duration = .seconds(10)
    /// How long a connection may take for the TLS handshake plus its first bytes. Default 10 s.
    public var handshakeTimeout: Duration = .seconds(10)
    /// How long an HTTP/1.1 keep-alive connection may stay silent. Default 60 s.
    public var httpIdleTimeout: Duration = .seconds(60)
    /// Largest accepted gRPC request message in bytes. Default 4 MiB (grpc-swift's default; OpenShell
    /// v0.0.30 uses 1 MiB).
    public var maxRequestMessageBytes: Int = 4 * 1024 * 1024
    /// The transport's hard message limit (bytes); above it grpc-swift would reset the stream. Kept above
    /// `maxRequestMessageBytes`, which `OversizedMessageGuard` (from the wire length prefix) and
    /// `MessageSizeInterceptor` (decoded size) enforce with RESOURCE_EXHAUSTED, so it is never reached.
    public var transportMaxRequestBytes: Int = 16 * 1024 * 1024
    /// Serve on one event loop and run the tasks of every RPC on it (``EventLoopTaskExecutor``) instead of
    /// Swift's default pool: a unary call then wakes one thread instead of hopping between the loop and pool
    /// threads (issue 14, GetSandbox at concurrency 1: gateway CPU per call about 30 % lower, context
    /// switches per call 12–13 → 1). But the gateway's RPC work is then bounded by one thread (at
    /// concurrency 64 on the busy shared machine the gateway process served about half the req/s; in-process
    /// at load 2 about the same), and blocking work in a handler holds up every connection. Default false.
    public var rpcTasksOnEventLoop: Bool = false
    /// Install SIGTERM/SIGINT handlers for the duration of ``GatewayServer/run()``. Default true.
    public var handleSignals: Bool = true
    /// OIDC bearer-token authentication, published on `GET /auth/config` (the interceptor that enforces
    /// it is passed in with the others). Default nil.
    public var oidc: OIDCSettings?

    /// A configuration listening on `host:port` with `security` (default mTLS) and the defaults above.
    public init(host: String, port: Int, security: GatewaySecurityMode = .mutualTLS) {
      self.host = host
      self.port = port
      self.security = security
    }
  }

  /// The configuration the server was created with.
  public let configuration: Configuration
  /// Verified client certificates of live connections (see ``CallerIdentity``).
  public let peerRegistry: PeerCertificateRegistry
  /// The metrics served on `/metrics` and fed by ``MetricsInterceptor``.
  public let metrics: GatewayMetrics
  /// Ends subscription streams when a graceful shutdown begins (see ``SubscriptionDrain``); applied by a
  /// ``SubscriptionDrainInterceptor`` the server appends to the interceptors it is given.
  public let subscriptionDrain = SubscriptionDrain()

  private let transport: HTTP2ServerTransport.Custom<OnePortListenerFactory>
  private let services: [any RegistrableRPCService]
  private let interceptors: [any ServerInterceptor]
  private let logger: Logger
  /// Counts (and logs, once a minute) `accept` failures for want of descriptors.
  let acceptFailures: AcceptFailureLogger
  private let shutdown = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
  private let started = Mutex(false)
  /// The executor the RPC tasks prefer (``Configuration/rpcTasksOnEventLoop``); nil = Swift's default.
  private let taskExecutor: EventLoopTaskExecutor?

  /// Prepares the server; nothing is bound until ``run()``.
  ///
  /// - Parameters:
  ///   - pki: required for ``GatewaySecurityMode/mutualTLS`` and ``GatewaySecurityMode/tls``.
  ///   - services: the gRPC services to serve.
  ///   - interceptors: server interceptors in order, typically
  ///     `[IdentityInterceptor(registry: peerRegistry), MetricsInterceptor(metrics: metrics)]`.
  ///   - readiness: called for every `GET /readyz`.
  ///   - serviceRouter: exposed services on the port (``ServiceURL``); nil = none.
  ///   - handshakeRefusals: told about every client refused before any RPC (TLS handshake, plaintext gRPC
  ///     on the TLS port; see ``HandshakeRefusalClassifier`` for what counts); nil = not reported.
  /// - Throws: ``GatewayServerError/tlsConfiguration(_:)`` if TLS is requested without a PKI or the
  ///   certificate files cannot be loaded.
  public init(
    configuration: Configuration,
    pki: GatewayPKI?,
    services: [any RegistrableRPCService],
    interceptors: [any ServerInterceptor] = [],
    readiness: @escaping @Sendable () -> ReadinessInfo,
    metrics: GatewayMetrics,
    peerRegistry: PeerCertificateRegistry = PeerCertificateRegistry(),
    serviceRouter: ServiceRouter? = nil,
    handshakeRefusals: HandshakeRefusalSink? = nil,
    logger: Logger = Logger(label: "openshell.gateway.server")
  ) throws {
    var sslContext: NIOSSLContext?
    if configuration.security.usesTLS {
      guard let pki else { throw GatewayServerError.tlsConfiguration("\(configuration.security) requires a PKI") }
      do {
        sslContext = try GatewayTLS.makeContext(mode: configuration.security, pki: pki)
      } catch {
        throw GatewayServerError.tlsConfiguration(String(describing: error))
      }
    }
    let settings = ProtocolSniffer.Settings(
      endpoints: HTTPEndpoints(
        readiness: readiness, metrics: metrics,
        authDescription: GatewayAuthDescription(security: configuration.security, oidc: configuration.oidc),
        services: serviceRouter, secure: configuration.security.usesTLS),
      registry: configuration.security == .mutualTLS ? peerRegistry : nil,
      handshakeTimeout: TimeAmount(configuration.handshakeTimeout),
      httpIdleTimeout: TimeAmount(configuration.httpIdleTimeout),
      refusals: configuration.security.usesTLS ? handshakeRefusals : nil,
      trustedCA: configuration.security == .mutualTLS ? pki?.caCertificate : nil)
    acceptFailures = AcceptFailureLogger(logger: logger)
    // With `rpcTasksOnEventLoop`, the listener, its connections and the tasks serving their RPCs share one loop.
    let loop = MultiThreadedEventLoopGroup.singleton.next()
    self.taskExecutor = configuration.rpcTasksOnEventLoop ? EventLoopTaskExecutor(eventLoop: loop) : nil
    let factory = OnePortListenerFactory(
      host: configuration.host, port: configuration.port, sslContext: sslContext,
      allowPlaintextProbes: configuration.allowPlaintextProbes, sniffer: settings,
      eventLoopGroup: configuration.rpcTasksOnEventLoop ? loop : MultiThreadedEventLoopGroup.singleton, acceptFailures: acceptFailures)
    var transportConfig = HTTP2ServerTransport.Custom<OnePortListenerFactory>.Config.defaults
    transportConfig.rpc.maxRequestPayloadSize = max(configuration.transportMaxRequestBytes, configuration.maxRequestMessageBytes)
    // A message over the limit is answered RESOURCE_EXHAUSTED from its length prefix, before it is buffered.
    OversizedMessageGuard.install(limit: configuration.maxRequestMessageBytes, on: &transportConfig)
    // Supervisors hold long-lived streams and ping every 10 s (also between calls) to notice a dead
    // gateway quickly. gRFC A8/A9's defaults (5 min, not without calls) would make the server close
    // their connections after three "too early" pings (~40 s), cutting long execs. Allow one per 5 s.
    transportConfig.connection.keepalive.clientBehavior.minPingIntervalWithoutCalls = .seconds(5)
    transportConfig.connection.keepalive.clientBehavior.allowWithoutCalls = true
    // Byte streams (SSH tunnels: ForwardTcp in, RelayStream from supervisors) need more than HTTP/2's
    // 64 KiB default receive window, or each stream moves at most 64 KiB per round trip (issue 11).
    transportConfig.http2.targetWindowSize = 4 << 20
    self.transport = HTTP2ServerTransport.Custom(listenerFactory: factory, config: transportConfig)
    self.configuration = configuration
    self.peerRegistry = peerRegistry
    self.metrics = metrics
    self.services = services
    // The error funnel comes after the given interceptors, so they (metrics, audit) see the final status
    // code, and before the drain interceptor, so its "shutting down" answer is funnelled too.
    self.interceptors = interceptors + [ErrorFunnelInterceptor(), SubscriptionDrainInterceptor(drain: subscriptionDrain)]
    self.logger = logger
  }

  /// The bound TCP port. Suspends until the listener is bound; nil if binding failed or the server has
  /// stopped.
  public var listeningPort: Int? {
    get async {
      guard let address = await transport.listeningAddress else { return nil }
      return address.ipv4?.port ?? address.ipv6?.port
    }
  }

  /// Asks the server to shut down gracefully (idempotent; safe from any thread, also before ``run()``).
  public func requestShutdown() {
    shutdown.continuation.yield()
  }

  /// Serves until a shutdown completes or the calling task is cancelled.
  ///
  /// - Throws: ``GatewayServerError/portInUse(_:)`` or ``GatewayServerError/bindFailed(host:port:reason:)``
  ///   when the port cannot be bound, ``GatewayServerError/alreadyRunning`` on a second call, or the
  ///   transport's error.
  public func run() async throws {
    let first = started.withLock { value -> Bool in
      defer { value = true }
      return !value
    }
    guard first else { throw GatewayServerError.alreadyRunning }

    let server = GRPCServer(transport: transport, services: services, interceptors: interceptors)
    // SIGTERM/SIGINT start the graceful shutdown (swift-service-lifecycle's UnixSignals; its sequence is
    // registered before serving starts, so no early signal takes the default action).
    let signals = configuration.handleSignals ? await UnixSignalsSequence(trapping: .sigterm, .sigint) : nil

    let grace = configuration.shutdownGracePeriod
    let logger = self.logger
    let requests = shutdown.stream
    let subscriptionDrain = self.subscriptionDrain
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask(executorPreference: self.taskExecutor) { try await server.serve() }
      if let signals {
        group.addTask { [logger, shutdown] in
          for await signal in signals {
            logger.info("received signal \(signal), shutting down gracefully")
            shutdown.continuation.yield()
          }
        }
      }
      group.addTask {
        for await _ in requests { break }
        guard !Task.isCancelled else { return }
        logger.info("graceful shutdown started", metadata: ["grace": "\(grace)"])
        // Draining first: gRPC's graceful shutdown cancels every running RPC (its RPC cancellation handle),
        // and handlers that let in-flight work finish anyway (ExecSandbox) tell it from a client that went
        // away by `isDraining`, which must already be true then.
        subscriptionDrain.begin()
        server.beginGracefulShutdown()
        try? await Task.sleep(for: grace)
        if !Task.isCancelled {
          logger.warning("graceful shutdown deadline passed; cancelling remaining connections")
        }
      }
      do {
        _ = try await group.next()
      } catch {
        group.cancelAll()
        throw Self.unwrap(error)
      }
      group.cancelAll()
    }
  }

  /// grpc-swift wraps transport errors in `RuntimeError(.transportError, cause:)`; surface ours.
  private static func unwrap(_ error: any Error) -> any Error {
    var current: any Error = error
    for _ in 0..<4 {
      if current is GatewayServerError { return current }
      guard let runtime = current as? RuntimeError, let cause = runtime.cause else { break }
      current = cause
    }
    return current is GatewayServerError ? current : error
  }
}
