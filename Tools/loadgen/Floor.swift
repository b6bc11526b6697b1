import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Gateway
import NIOCore
import NIOPosix
import NIOSSL
import OpenShellAPI

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell-loadgen --floor`: the floor our gRPC stack (grpc-swift-2, swift-nio, swift-nio-ssl, protobuf) sets
/// under GetSandbox on this machine (issue 14). In one process, interleaved per `--concurrency` level, the same
/// client set-up (``LoadGen/withClients(port:pki:count:certificate:plaintext:_:)``, `--connections`) calls
/// GetSandbox on
/// 1. the in-process gateway over mTLS (as `--issue14` measures it),
/// 2. a ``BareGetSandboxServer`` over mTLS with the gateway's PKI, and
/// 3. a ``BareGetSandboxServer`` over plaintext HTTP/2 (TLS's share),
/// which of them goes first rotating from level to level. The bare servers answer the gateway's own response to
/// that call. CPU is the whole process's (client and server), from `CLOCK_PROCESS_CPUTIME_ID`.
extension LoadGen {
  /// The row names of the three servers, in the order of the table's rows.
  static let floorServers = ["openshell gateway, mTLS", "bare grpc-swift-2, mTLS", "bare grpc-swift-2, plaintext"]

  /// Runs `--floor`: starts the in-process gateway and the two bare servers, checks that all three answer the
  /// same GetSandbox response, then measures each at every level in `levels` and prints one table.
  func floorCells(levels: [Int]) async throws {
    guard !serverEventLoop else {
      throw ValidationErrorText("--floor compares the default server set-ups; --server-event-loop has no bare counterpart")
    }
    let dir = dataDir ?? NSTemporaryDirectory() + "openshell-loadgen-floor-\(getpid())"
    defer { if dataDir == nil { try? FileManager.default.removeItem(atPath: dir) } }
    let gw = try await InProcessGateway.start(dir: dir)
    guard let pki = gw.running.pki else {
      await gw.stop()
      throw ValidationErrorText("the in-process gateway has no PKI (mTLS expected)")
    }
    print(header(dir: dir, port: gw.port, levels: levels))
    let (duration, connections) = (self.duration, self.connections)
    let request = Openshell_V1_GetSandboxRequest.with {
      $0.name = "loadgen-target"; $0.workspaceScope = .with { $0.workspace = "default" }
    }
    let rows: [[String]]
    do {
      rows = try await withClients(port: gw.port, pki: pki.directory, count: connections) { ours in
        // Already there when --data-dir is reused; GetSandbox below fails clearly if it is missing.
        _ = try? await ours[0].createSandbox(
          .with {
            $0.name = request.name; $0.workspaceScope = request.workspaceScope
          })
        let response = try await ours[0].getSandbox(request)
        let tls = try await BareGetSandboxServer.start(response: response, pki: pki)
        let plain: BareGetSandboxServer
        do { plain = try await BareGetSandboxServer.start(response: response, pki: nil) } catch {
          await tls.stop()
          throw error
        }
        let size = (try response.serializedBytes() as [UInt8]).count
        print(
          "bare servers: 127.0.0.1:\(tls.port) (mTLS, the gateway's PKI) and 127.0.0.1:\(plain.port) (plaintext), each answering "
            + "the gateway's GetSandbox response (\(size) bytes)")
        do {
          let rows = try await withClients(port: tls.port, pki: pki.directory, count: connections) { bareTLS in
            try await withClients(port: plain.port, pki: pki.directory, count: connections, plaintext: true) { bare in
              let sets = [ours, bareTLS, bare]
              // Warm-up (TLS handshakes, first allocations); the bare servers must answer what the gateway does.
              for (name, apis) in zip(Self.floorServers, sets) {
                for api in apis {
                  for _ in 0..<50 {
                    guard try await api.getSandbox(request) == response else {
                      throw ValidationErrorText("\(name) answered GetSandbox with another response")
                    }
                  }
                }
              }
              var rows: [[String]] = []
              // The servers' order rotates from level to level (no server always first after a change of
              // concurrency), from a random start, so repeated runs put each server in every position; the rows
              // keep the fixed order.
              let start = Int.random(in: 0..<sets.count)
              print("first server at the first level: \(Self.floorServers[start])")
              for (n, level) in levels.enumerated() {
                var cells: [Int: [String]] = [:]
                for k in 0..<sets.count {
                  let i = (start + n + k) % sets.count
                  let (ticket, apis) = (Ticket(), sets[i])
                  let cpu0 = Self.processCPUTime()
                  let r = try await runConcurrent(concurrency: level, seconds: duration) {
                    _ = try await apis[ticket.next() % apis.count].getSandbox(request)
                  }
                  let cpu = (Self.processCPUTime() - cpu0) / Double(max(r.ok, 1))
                  cells[i] = Self.floorRow(Self.floorServers[i], level, r, cpuPerRequest: cpu)
                }
                rows += (0..<sets.count).compactMap { cells[$0] }
              }
              return rows
            }
          }
          await tls.stop()
          await plain.stop()
          return rows
        } catch {
          await tls.stop()
          await plain.stop()
          throw error
        }
      }
    } catch {
      await gw.stop()
      throw error
    }
    await gw.stop()
    print(
      Table.render(["server", "concurrency", "requests", "errors", "req/s", "p50 µs", "p99 µs", "CPU µs/req", "load 1m"], rows))
    print(
      "(CPU µs/req: the whole process, client included, CLOCK_PROCESS_CPUTIME_ID over the cell; load 1m: /proc/loadavg after the cell; "
        + "load average \(Self.loadAverage()) at the end)")
  }

  /// One table row: server, concurrency, requests, errors, req/s, p50 and p99 in µs, CPU µs per request, load.
  static func floorRow(_ server: String, _ level: Int, _ r: RunResult, cpuPerRequest: Double) -> [String] {
    if let e = r.firstError { FileHandle.standardError.write(Data("\(server) x\(level): first error: \(e)\n".utf8)) }
    return [
      server, "\(level)", "\(r.ok)", "\(r.errors)", String(format: "%.0f", r.perSecond), String(format: "%.0f", r.percentileMs(50) * 1000),
      String(format: "%.0f", r.percentileMs(99) * 1000), String(format: "%.1f", cpuPerRequest * 1e6),
      loadAverage().split(separator: " ").first.map(String.init) ?? "?",
    ]
  }

  /// CPU seconds (user + system, every thread) this process has used: `CLOCK_PROCESS_CPUTIME_ID`.
  static func processCPUTime() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
  }
}

/// A measurement peer for `--floor`, living in Tools/loadgen only (not product code): a grpc-swift-2 server on
/// 127.0.0.1 (ephemeral port) serving openshell's GetSandbox — the generated method descriptor and protobuf
/// messages — with a handler that answers one pre-built response: no interceptors, no store, no audit, no
/// identity. What it costs is what grpc-swift-2 + NIO (+ TLS) + protobuf alone cost for that call.
///
/// Transport as the gateway's (`GatewayServer`): `HTTP2ServerTransport.Custom` with a listener like the gateway's
/// `OnePortListenerFactory` (``BareListenerFactory``: `NIOSSLServerHandler`, then grpc-swift's HTTP/2 pipeline;
/// backlog 256, `TCP_NODELAY`), on the same singleton event loop group, with the gateway's transport settings
/// (request payload limit, client keepalive policy, 4 MiB HTTP/2 window). Not `HTTP2ServerTransport.Posix`: it
/// hands each RPC a transport-specific context whose closure fetches and parses the peer's certificate on
/// every call (two hops to the event loop), which the gateway does once per connection. With a PKI: mTLS with
/// the gateway's server certificate and key, client certificates verified against its CA (no hostname check),
/// TLS 1.2 minimum and the gateway's ALPN list (`http/1.1, h2`). Left out, being the gateway's own layers: its
/// protocol sniffer (one port for gRPC and HTTP/1.1), handshake-refusal observer and oversized-message guard.
struct BareGetSandboxServer: Sendable {
  /// The bound port.
  let port: Int
  private let server: GRPCServer<HTTP2ServerTransport.Custom<BareListenerFactory>>
  private let task: Task<Void, Error>

  /// Starts serving `response` to every GetSandbox; `pki` nil = plaintext HTTP/2 (prior knowledge).
  static func start(response: Openshell_V1_SandboxResponse, pki: GatewayPKI?) async throws -> BareGetSandboxServer {
    let gateway = GatewayServer.Configuration(host: "127.0.0.1", port: 0)
    var config = HTTP2ServerTransport.Custom<BareListenerFactory>.Config.defaults
    config.rpc.maxRequestPayloadSize = max(gateway.transportMaxRequestBytes, gateway.maxRequestMessageBytes)
    config.connection.keepalive.clientBehavior.minPingIntervalWithoutCalls = .seconds(5)
    config.connection.keepalive.clientBehavior.allowWithoutCalls = true
    config.http2.targetWindowSize = 4 << 20
    let ssl = try pki.map { pki in
      var t = TLSConfiguration.makeServerConfiguration(
        certificateChain: try NIOSSLCertificate.fromPEMFile(pki.serverCertificatePath).map { .certificate($0) },
        privateKey: .privateKey(try NIOSSLPrivateKey(file: pki.serverKeyPath, format: .pem)))
      t.minimumTLSVersion = .tlsv12
      t.applicationProtocols = ["http/1.1", "h2"]
      t.certificateVerification = .noHostnameVerification
      t.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(pki.caCertificatePath))
      return try NIOSSLContext(configuration: t)
    }
    let transport = HTTP2ServerTransport.Custom(listenerFactory: BareListenerFactory(sslContext: ssl), config: config)
    let server = GRPCServer(transport: transport, services: [FixedGetSandbox(response: response)])
    let task = Task { try await server.serve() }
    do {
      guard let port = await transport.listeningAddress?.ipv4?.port else {
        throw ValidationErrorText("the bare server bound no IPv4 port")
      }
      return BareGetSandboxServer(port: port, server: server, task: task)
    } catch {
      task.cancel()
      throw error
    }
  }

  /// Stops accepting, lets open calls finish, and waits for the server to end.
  func stop() async {
    server.beginGracefulShutdown()
    _ = try? await task.value
  }
}

/// The bare server's listener: 127.0.0.1, an ephemeral port, TLS (when given a context) and then grpc-swift's
/// HTTP/2 pipeline on each accepted connection — the gateway's `OnePortListenerFactory` without its sniffer and
/// refusal observer.
struct BareListenerFactory: HTTP2ServerTransport.ListenerFactory {
  let sslContext: NIOSSLContext?
  /// The gateway's group (`GatewayServer` without `rpcTasksOnEventLoop`).
  var eventLoopGroup: any EventLoopGroup { MultiThreadedEventLoopGroup.singleton }

  func makeListeningChannel(
    listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
    connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
  ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
    let sslContext = self.sslContext
    return try await ServerBootstrap(group: eventLoopGroup)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelOption(.backlog, value: 256)
      .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
      .serverChannelInitializer { listenerConfigurator.configure(channel: $0) }
      .bind(host: "127.0.0.1", port: 0) { channel in
        channel.eventLoop.makeCompletedFuture {
          if let sslContext { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext)) }
        }.flatMap {
          connectionConfigurator.configure(channel: channel, tls: sslContext == nil ? .none : .configured(requireALPN: false))
        }
      }
  }
}

/// GetSandbox only, answered with one fixed message; registered as the generated
/// `Openshell_V1_OpenShell.StreamingServiceProtocol.registerMethods` registers it, the handler doing what the
/// generated unary adapters do (collect the one request message, answer a single response).
private struct FixedGetSandbox: RegistrableRPCService {
  let response: Openshell_V1_SandboxResponse

  func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
    let response = self.response
    router.registerHandler(
      forMethod: Openshell_V1_OpenShell.Method.GetSandbox.descriptor,
      deserializer: ProtobufDeserializer<Openshell_V1_GetSandboxRequest>(),
      serializer: ProtobufSerializer<Openshell_V1_SandboxResponse>()
    ) { request, _ in
      _ = try await ServerRequest(stream: request)
      return StreamingServerResponse(single: ServerResponse(message: response))
    }
  }
}
