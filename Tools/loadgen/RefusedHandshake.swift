import NIOCore
import NIOPosix
import NIOSSL

/// One TLS connection to the gateway without a client certificate, refused in the handshake (the load of
/// `--audit-overhead`'s "refused TLS handshake" row): connects, completes the client side of the handshake
/// (TLS 1.3) and waits for the gateway's `certificate_required` alert.
struct RefusedHandshake: Sendable {
  let context: NIOSSLContext
  let port: Int

  /// - Parameter caFile: the gateway CA (PEM): the client verifies the gateway, as a real client would.
  init(caFile: String, port: Int) throws {
    var tls = TLSConfiguration.makeClientConfiguration()
    tls.trustRoots = .file(caFile)
    tls.certificateVerification = .noHostnameVerification
    tls.applicationProtocols = ["h2"]
    context = try NIOSSLContext(configuration: tls)
    self.port = port
  }

  /// - Throws: when the connection was not refused with `certificate_required` (then the gateway accepted a
  ///   client without a certificate, or something else broke).
  func run() async throws {
    let loop = MultiThreadedEventLoopGroup.singleton.any()
    let outcome = loop.makePromise(of: String?.self)
    let channel = try await ClientBootstrap(group: loop)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
          try channel.pipeline.syncOperations.addHandler(FirstError(outcome: outcome))
        }
      }
      .connect(host: "127.0.0.1", port: port).get()
    let error = try await outcome.futureResult.get()
    try? await channel.close()
    guard let error, error.contains("CERTIFICATE_REQUIRED") else {
      throw ValidationErrorText("the handshake without a client certificate ended with \(error ?? "no error"), not certificate_required")
    }
  }
}

/// Reports the first error of the connection (or nil when it closes without one) and closes it.
private final class FirstError: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  let outcome: EventLoopPromise<String?>
  init(outcome: EventLoopPromise<String?>) { self.outcome = outcome }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    outcome.succeed(String(describing: error))
    context.close(promise: nil)
  }

  func channelInactive(context: ChannelHandlerContext) {
    outcome.succeed(nil)  // no-op when an error came first
    context.fireChannelInactive()
  }
}
