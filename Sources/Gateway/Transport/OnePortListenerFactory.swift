import GRPCNIOTransportHTTP2
import NIOCore
import NIOPosix
import NIOSSL

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Binds the gateway's single port for `HTTP2ServerTransport.Custom` and configures every accepted
/// connection eagerly (swift-build-notes.md §6.3):
///
/// ```
/// [TLSDetector (TLS + plaintext probes)] -> [NIOSSLServerHandler (TLS modes)]
///   -> [HandshakeRefusalObserver (TLS modes, until the handshake completes)] -> [ProtocolSniffer]
///   -> [gRPC HTTP/2 pipeline from ConnectionConfigurator]
/// ```
///
/// The listener channel gets grpc-swift's quiescing handler, so graceful shutdown reaches every
/// accepted connection, including HTTP/1.1 and silent ones.
struct OnePortListenerFactory: HTTP2ServerTransport.ListenerFactory {
  let host: String
  let port: Int
  let sslContext: NIOSSLContext?
  /// Admit plaintext HTTP/1.1 probes on a TLS port (only meaningful when `sslContext` is set).
  let allowPlaintextProbes: Bool
  let sniffer: ProtocolSniffer.Settings
  let eventLoopGroup: any EventLoopGroup
  /// Logs descriptor exhaustion on `accept` (added to the listening channel).
  let acceptFailures: AcceptFailureLogger

  func makeListeningChannel(
    listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
    connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
  ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
    let sslContext = self.sslContext
    let allowPlaintextProbes = self.allowPlaintextProbes
    let settings = self.sniffer
    let acceptFailures = self.acceptFailures
    do {
      return try await ServerBootstrap(group: eventLoopGroup)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .serverChannelOption(.backlog, value: 256)
        .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
        .serverChannelInitializer { channel in
          channel.pipeline.addHandler(acceptFailures).flatMap { listenerConfigurator.configure(channel: channel) }
        }
        .bind(host: host, port: port) { channel in
          channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            if let sslContext {
              if allowPlaintextProbes {
                try sync.addHandler(TLSDetector(sslContext: sslContext))
              } else {
                try sync.addHandler(NIOSSLServerHandler(context: sslContext))
              }
              // Behind the TLS handler (TLSDetector inserts that one right after itself, so before this).
              if let sink = settings.refusals {
                try sync.addHandler(HandshakeRefusalObserver(sink: sink, ca: settings.trustedCA))
              }
            }
            try sync.addHandler(ProtocolSniffer(settings: settings))
          }.flatMap {
            connectionConfigurator.configure(
              channel: channel, tls: sslContext == nil ? .none : .configured(requireALPN: false))
          }
        }
    } catch let error as IOError where error.errnoCode == EADDRINUSE {
      throw GatewayServerError.portInUse(port)
    } catch let error as IOError where error.errnoCode == EACCES {
      throw GatewayServerError.bindFailed(host: host, port: port, reason: "permission denied")
    } catch {
      throw GatewayServerError.bindFailed(host: host, port: port, reason: String(describing: error))
    }
  }
}
