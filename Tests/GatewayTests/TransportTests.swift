import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import OpenShellAPI
import Testing

@testable import Gateway

#if canImport(Glibc)
  import Glibc
#endif

/// Test double: serves only `openshell.v1.OpenShell/Health` and reports the caller identity it saw
/// in `version` as `<CallerIdentity.current.actor>|<registry lookup actor>`, followed by `|<thread name>` of the
/// thread the handler ran on when `reportsThread`.
private struct HealthOnlyService: RegistrableRPCService {
  let registry: PeerCertificateRegistry
  var reportsThread = false

  func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
    let registry = self.registry
    let reportsThread = self.reportsThread
    router.registerHandler(
      forMethod: Openshell_V1_OpenShell.Method.Health.descriptor,
      deserializer: ProtobufDeserializer<Openshell_V1_HealthRequest>(),
      serializer: ProtobufSerializer<Openshell_V1_HealthResponse>()
    ) { request, context in
      for try await _ in request.messages {}
      var response = Openshell_V1_HealthResponse()
      response.status = .healthy
      response.version =
        CallerIdentity.current.actor + "|" + registry.identity(forRemotePeer: context.remotePeer).actor
      if reportsThread { response.version += "|" + currentThreadName() }
      return StreamingServerResponse(single: ServerResponse(message: response))
    }
  }
}

/// The name of the calling thread, from /proc/thread-self/comm (SwiftNIO names its event loop threads `NIO-…`).
private func currentThreadName() -> String {
  let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?"
  return comm.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// A gateway server running in a task on 127.0.0.1 with an ephemeral port.
private struct RunningServer {
  let server: GatewayServer
  let task: Task<Void, any Error>
  let port: Int
  let pki: GatewayPKI?

  static func start(
    _ mode: GatewaySecurityMode, pki: GatewayPKI?, port: Int = 0,
    readiness: @escaping @Sendable () -> ReadinessInfo = { .ready(version: "9.9.9", headSeq: 42) }, reportsThread: Bool = false,
    configure: (inout GatewayServer.Configuration) -> Void = { _ in }
  ) async throws -> RunningServer {
    var configuration = GatewayServer.Configuration(host: "127.0.0.1", port: port, security: mode)
    configuration.handleSignals = false
    configuration.shutdownGracePeriod = .seconds(5)
    configure(&configuration)
    let registry = PeerCertificateRegistry()
    let metrics = GatewayMetrics()
    let server = try GatewayServer(
      configuration: configuration, pki: pki, services: [HealthOnlyService(registry: registry, reportsThread: reportsThread)],
      interceptors: [IdentityInterceptor(registry: registry), MetricsInterceptor(metrics: metrics)],
      readiness: readiness, metrics: metrics, peerRegistry: registry)
    let task = Task { try await server.run() }
    guard let bound = await server.listeningPort else {
      try await task.value
      throw GatewayServerError.bindFailed(host: "127.0.0.1", port: port, reason: "not bound")
    }
    return RunningServer(server: server, task: task, port: bound, pki: pki)
  }

  func stop() async throws {
    server.requestShutdown()
    try await task.value
  }

  /// Calls Health with the given client security; returns the `version` field (identity echo).
  func health(_ security: HTTP2ClientTransport.Posix.TransportSecurity) async throws -> String {
    let transport = try HTTP2ClientTransport.Posix(
      target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: security)
    return try await withGRPCClient(transport: transport) { client in
      var options = CallOptions.defaults
      options.timeout = .seconds(5)
      options.waitForReady = false
      let response = try await Openshell_V1_OpenShell.Client(wrapping: client)
        .health(Openshell_V1_HealthRequest(), options: options)
      #expect(response.status == .healthy)
      return response.version
    }
  }

  func curl(_ arguments: [String]) async throws -> GatewayTestSupport.ProcessResult {
    try await GatewayTestSupport.run(
      "/usr/bin/curl", ["-sS", "--max-time", "5", "-w", "\n%{http_code} %{http_version}"] + arguments)
  }

  func https(_ path: String, clientCertificate: Bool = true) -> [String] {
    var args = ["--cacert", pki!.caCertificatePath]
    if clientCertificate { args += ["--cert", pki!.clientCertificatePath, "--key", pki!.clientKeyPath] }
    return args + ["https://127.0.0.1:\(port)\(path)"]
  }
}

private func operatorSecurity(_ pki: GatewayPKI) -> HTTP2ClientTransport.Posix.TransportSecurity {
  .mTLS(
    certificateChain: [.file(path: pki.clientCertificatePath, format: .pem)],
    privateKey: .file(path: pki.clientKeyPath, format: .pem)
  ) { config in
    config.trustRoots = .certificates([.file(path: pki.caCertificatePath, format: .pem)])
  }
}

private func serverOnlySecurity(_ pki: GatewayPKI) -> HTTP2ClientTransport.Posix.TransportSecurity {
  .tls { config in config.trustRoots = .certificates([.file(path: pki.caCertificatePath, format: .pem)]) }
}

private func makePKI() throws -> GatewayPKI {
  try GatewayPKI.loadOrCreate(directory: try GatewayTestSupport.temporaryDirectory("transport"), gatewayHosts: [])
}

/// A TCP connection that never sends a byte; returns the file descriptor.
private func openSilentConnection(port: Int) throws -> Int32 {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_port = in_port_t(UInt16(port)).bigEndian
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  let rc = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
  }
  guard rc == 0 else { throw GatewayServerError.bindFailed(host: "127.0.0.1", port: port, reason: "connect failed") }
  return fd
}

@Suite("Gateway one-port transport", .serialized, .timeLimit(.minutes(2)))
struct TransportTests {
  @Test("mTLS: operator and sandbox certificates call gRPC; identities reach the handler")
  func mutualTLSIdentities() async throws {
    let pki = try makePKI()
    let running = try await RunningServer.start(.mutualTLS, pki: pki)
    let echo = try await running.health(operatorSecurity(pki))
    let parts = echo.split(separator: "|").map(String.init)
    #expect(parts.count == 2)
    #expect(parts[0] == parts[1])
    let fingerprint = try CertificateFactory.fingerprint(
      try .init(pemEncoded: String(contentsOfFile: pki.clientCertificatePath, encoding: .utf8)))
    #expect(parts[0] == "operator:CN=openshell-operator/sha256:\(fingerprint)")

    let sandbox = try pki.issueSandboxCertificate(sandboxID: "sb-42")
    let dir = try GatewayTestSupport.temporaryDirectory("sandbox")
    try sandbox.certificatePEM.write(toFile: dir + "/s.crt", atomically: true, encoding: .utf8)
    try sandbox.privateKeyPEM.write(toFile: dir + "/s.key", atomically: true, encoding: .utf8)
    let sandboxEcho = try await running.health(
      .mTLS(certificateChain: [.file(path: dir + "/s.crt", format: .pem)], privateKey: .file(path: dir + "/s.key", format: .pem)) {
        $0.trustRoots = .certificates([.file(path: pki.caCertificatePath, format: .pem)])
      })
    #expect(sandboxEcho == "sandbox:sb-42|sandbox:sb-42")
    try await running.stop()
    #expect(running.server.peerRegistry.count == 0)
  }

  @Test("rpcTasksOnEventLoop: handlers run on an event loop thread (else on Swift's pool); identities still reach them")
  func rpcTasksOnEventLoop() async throws {
    let pki = try makePKI()
    let onLoop = try await RunningServer.start(.mutualTLS, pki: pki, reportsThread: true) { $0.rpcTasksOnEventLoop = true }
    for _ in 0..<3 {
      let parts = try await onLoop.health(operatorSecurity(pki)).split(separator: "|").map(String.init)
      #expect(parts.count == 3)
      #expect(parts.first?.hasPrefix("operator:CN=openshell-operator/sha256:") == true)
      #expect(parts.count == 3 && parts[0] == parts[1])
      #expect(parts.last?.hasPrefix("NIO-") == true, "handler ran on \(parts.last ?? "?")")
    }
    try await onLoop.stop()
    #expect(onLoop.server.peerRegistry.count == 0)

    let onPool = try await RunningServer.start(.mutualTLS, pki: pki, reportsThread: true)
    let parts = try await onPool.health(operatorSecurity(pki)).split(separator: "|").map(String.init)
    #expect(parts.count == 3)
    #expect(parts.last?.hasPrefix("NIO-") == false, "handler ran on \(parts.last ?? "?")")
    try await onPool.stop()
  }

  @Test("mTLS: no client certificate, or one from another CA, is refused")
  func mutualTLSRefusals() async throws {
    let pki = try makePKI()
    let foreign = try makePKI()
    let running = try await RunningServer.start(.mutualTLS, pki: pki)
    await #expect(throws: RPCError.self) { _ = try await running.health(serverOnlySecurity(pki)) }
    let foreignCert = HTTP2ClientTransport.Posix.TransportSecurity.mTLS(
      certificateChain: [.file(path: foreign.clientCertificatePath, format: .pem)],
      privateKey: .file(path: foreign.clientKeyPath, format: .pem)
    ) { $0.trustRoots = .certificates([.file(path: pki.caCertificatePath, format: .pem)]) }
    await #expect(throws: RPCError.self) { _ = try await running.health(foreignCert) }
    await #expect(throws: RPCError.self) { _ = try await running.health(.plaintext) }
    try await running.stop()
  }

  @Test("mTLS: curl /healthz, /readyz, /metrics, 404, 405; no client certificate fails")
  func mutualTLSHTTP() async throws {
    let pki = try makePKI()
    let running = try await RunningServer.start(.mutualTLS, pki: pki)
    let health = try await running.curl(running.https("/healthz"))
    #expect(health.status == 0, "\(health.stderr)")
    #expect(health.stdout == "ok\n200 1.1")

    let ready = try await running.curl(running.https("/readyz"))
    #expect(ready.stdout == #"{"status":"ready","version":"9.9.9","head_seq":42}"# + "\n200 1.1")

    _ = try await running.health(operatorSecurity(pki))
    let metrics = try await running.curl(running.https("/metrics"))
    #expect(metrics.stdout.contains(#"openshell_grpc_requests_total{method="openshell.v1.OpenShell/Health",code="OK"} 1"#))
    #expect(metrics.stdout.contains("openshell_grpc_request_duration_seconds_bucket"))
    #expect(metrics.stdout.contains("openshell_log_head_seq"))
    #expect(metrics.stdout.hasSuffix("200 1.1"))

    #expect(try await running.curl(running.https("/nope")).stdout.hasSuffix("404 1.1"))
    #expect(try await running.curl(["-X", "POST"] + running.https("/healthz")).stdout.hasSuffix("405 1.1"))
    #expect(try await running.curl(["--http2"] + running.https("/healthz")).stdout.hasSuffix("200 1.1"))

    let noCert = try await running.curl(running.https("/healthz", clientCertificate: false))
    #expect(noCert.status != 0)
    try await running.stop()
  }

  @Test("mTLS: openssl s_client with a client certificate negotiates ALPN h2")
  func alpn() async throws {
    let pki = try makePKI()
    let running = try await RunningServer.start(.mutualTLS, pki: pki)
    let result = try await GatewayTestSupport.run(
      "/usr/bin/timeout",
      [
        "10", "/usr/bin/openssl", "s_client", "-connect", "127.0.0.1:\(running.port)", "-CAfile", pki.caCertificatePath,
        "-cert", pki.clientCertificatePath, "-key", pki.clientKeyPath, "-alpn", "h2",
      ], stdin: "")
    #expect(result.stdout.contains("ALPN protocol: h2"), "\(result.stdout)\n\(result.stderr)")
    #expect(result.stdout.contains("Verify return code: 0 (ok)"))
    try await running.stop()
  }

  @Test("/readyz answers 503 while starting")
  func readinessStarting() async throws {
    let running = try await RunningServer.start(.plaintext, pki: nil, readiness: { .starting(version: "1.0") })
    let ready = try await running.curl(["http://127.0.0.1:\(running.port)/readyz"])
    #expect(ready.stdout == #"{"status":"starting","version":"1.0"}"# + "\n503 1.1")
    try await running.stop()
  }

  @Test("plaintext mode: HTTP/1.1 and h2c gRPC on one port, anonymous identity")
  func plaintextMode() async throws {
    let running = try await RunningServer.start(.plaintext, pki: nil)
    let health = try await running.curl(["http://127.0.0.1:\(running.port)/healthz"])
    #expect(health.stdout == "ok\n200 1.1")
    #expect(try await running.health(.plaintext) == "anonymous|anonymous")
    try await running.stop()
  }

  @Test("TLS mode (--disable-gateway-auth): no client certificate needed, anonymous identity")
  func tlsMode() async throws {
    let pki = try makePKI()
    let running = try await RunningServer.start(.tls, pki: pki)
    #expect(try await running.health(serverOnlySecurity(pki)) == "anonymous|anonymous")
    let health = try await running.curl(running.https("/healthz", clientCertificate: false))
    #expect(health.stdout == "ok\n200 1.1")
    try await running.stop()
  }

  @Test("TLS port with plaintext probes: HTTP/1.1 /healthz yes, /metrics 403, plaintext gRPC refused")
  func plaintextProbes() async throws {
    let pki = try makePKI()
    let running = try await RunningServer.start(.mutualTLS, pki: pki, configure: { $0.allowPlaintextProbes = true })
    #expect(try await running.curl(["http://127.0.0.1:\(running.port)/healthz"]).stdout == "ok\n200 1.1")
    #expect(try await running.curl(["http://127.0.0.1:\(running.port)/metrics"]).stdout.hasSuffix("403 1.1"))
    let h2c = try await running.curl(["--http2-prior-knowledge", "http://127.0.0.1:\(running.port)/healthz"])
    #expect(h2c.status != 0)
    await #expect(throws: RPCError.self) { _ = try await running.health(.plaintext) }
    #expect(try await running.health(operatorSecurity(pki)).hasPrefix("operator:"))
    try await running.stop()
  }

  @Test("graceful shutdown is not held up by a silent TCP connection")
  func shutdownWithSilentConnection() async throws {
    let pki = try makePKI()
    let running = try await RunningServer.start(.mutualTLS, pki: pki, configure: { $0.shutdownGracePeriod = .seconds(10) })
    let fd = try openSilentConnection(port: running.port)
    defer { close(fd) }
    try await Task.sleep(for: .milliseconds(100))
    let elapsed = try await ContinuousClock().measure { try await running.stop() }
    #expect(elapsed < .seconds(3), "shutdown took \(elapsed)")
  }

  @Test("graceful shutdown closes an idle HTTP/1.1 keep-alive connection")
  func shutdownWithKeepAliveConnection() async throws {
    let running = try await RunningServer.start(.plaintext, pki: nil, configure: { $0.shutdownGracePeriod = .seconds(10) })
    let fd = try openSilentConnection(port: running.port)
    defer { close(fd) }
    let request = Array("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
    #expect(send(fd, request, request.count, 0) == request.count)
    var buffer = [UInt8](repeating: 0, count: 512)
    let n = recv(fd, &buffer, buffer.count, 0)
    #expect(String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self).hasPrefix("HTTP/1.1 200 OK"))
    let elapsed = try await ContinuousClock().measure { try await running.stop() }
    #expect(elapsed < .seconds(3), "shutdown took \(elapsed)")
    #expect(recv(fd, &buffer, buffer.count, 0) == 0, "the server closed the keep-alive connection")
  }

  @Test("a connection that stays silent past the handshake deadline is closed")
  func handshakeDeadline() async throws {
    let running = try await RunningServer.start(.plaintext, pki: nil, configure: { $0.handshakeTimeout = .milliseconds(500) })
    let fd = try openSilentConnection(port: running.port)
    defer { close(fd) }
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let start = ContinuousClock.now
    var byte: UInt8 = 0
    let n = recv(fd, &byte, 1, 0)
    #expect(n == 0, "expected EOF from the server")
    #expect(ContinuousClock.now - start < .seconds(3))
    try await running.stop()
  }

  @Test("port in use is reported as GatewayServerError.portInUse(port)")
  func portInUse() async throws {
    let first = try await RunningServer.start(.plaintext, pki: nil)
    await #expect(throws: GatewayServerError.portInUse(first.port)) {
      _ = try await RunningServer.start(.plaintext, pki: nil, port: first.port)
    }
    try await first.stop()
  }

  @Test("SIGTERM starts a graceful shutdown")
  func sigterm() async throws {
    let running = try await RunningServer.start(.plaintext, pki: nil, configure: { $0.handleSignals = true })
    kill(getpid(), SIGTERM)
    let elapsed = try await ContinuousClock().measure { try await running.task.value }
    #expect(elapsed < .seconds(3))
  }
}
