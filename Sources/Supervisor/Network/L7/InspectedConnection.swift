import NIOCore
import NIOHTTP1
import NIOSSL
import OpenShellAPI

/// Where an inspected connection goes, fixed when its CONNECT (or absolute-form request) was admitted.
struct InspectedTarget: Sendable {
  /// The upstream host and port (for policy endpoints, the CONNECT target).
  var host: String
  var port: Int
  /// The addresses the SSRF guard checked; the upstream dial uses exactly these.
  var addresses: [IPAddress]
  /// The calling binary (nil only for `inference.local`, which no policy governs, when unidentified).
  var binary: CallerBinary?
  /// TLS towards the upstream (for policy endpoints: the client spoke TLS inside the tunnel).
  var tls: Bool
  /// The name the client asked for (the leaf presented to it is for this name).
  var clientHost: String
  /// Set for `inference.local`: requests go to this route instead of being decided by the policy.
  var inference: InferenceTarget?
}

/// The inference route an `inference.local` connection forwards to.
struct InferenceTarget: Sendable {
  var route: Openshell_Inference_V1_ResolvedRoute
  var endpoint: InferenceRouter.Endpoint
}

/// Turns an admitted client connection into an inspected one (enforcement-and-ssh.md §1.4, row
/// "L7"; openshell-behavior.md §7 "TLS is detected automatically and terminated for rest"): inside a
/// CONNECT tunnel the first byte tells whether the client speaks TLS (a handshake record starts with
/// 0x16); if so, TLS is terminated with a leaf for the CONNECT host signed by the sandbox CA, and the
/// upstream is dialled with TLS too; otherwise both sides stay plaintext. Then every HTTP/1.1 request
/// goes through ``L7ClientHandler``.
enum InspectedConnection {
  /// The handlers that inspect plaintext HTTP on a client channel (after TLS termination, if any).
  static func httpHandlers(proxy: PolicyProxy, target: InspectedTarget) -> [ChannelHandler] {
    [
      // After an upgrade, bytes the decoder held reach the relay as its `leftoverDataWhenDone` error.
      ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .fireError)),
      HTTPResponseEncoder(),
      L7ClientHandler(proxy: proxy, target: target),
    ]
  }

  /// Inspects a CONNECT tunnel: adds a ``TLSSniffHandler`` at the end of `channel`'s pipeline.
  static func startTunnel(_ channel: Channel, proxy: PolicyProxy, target: InspectedTarget) throws {
    try channel.pipeline.syncOperations.addHandler(TLSSniffHandler(proxy: proxy, target: target))
  }

  /// Inspects an absolute-form `http://` request: the plaintext HTTP handlers are added at the end of
  /// `channel`'s pipeline (the caller then feeds them the request it already read).
  static func startPlain(_ channel: Channel, proxy: PolicyProxy, target: InspectedTarget) throws {
    var t = target
    t.tls = false
    try channel.pipeline.syncOperations.addHandlers(httpHandlers(proxy: proxy, target: t))
  }
}

/// Waits for the first bytes of a tunnel, then installs TLS termination (when they are a TLS
/// handshake) and the HTTP inspection handlers, and removes itself.
final class TLSSniffHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer

  let proxy: PolicyProxy
  let target: InspectedTarget
  private var configured = false

  init(proxy: PolicyProxy, target: InspectedTarget) {
    self.proxy = proxy
    self.target = target
  }

  /// Whether `buffer` starts like a TLS handshake record (content type 0x16, version major 3).
  static func looksLikeTLS(_ buffer: ByteBuffer) -> Bool {
    guard let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return false }
    if type != 0x16 { return false }
    guard let major = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self) else { return true }
    return major == 3
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = unwrapInboundIn(data)
    guard !configured else {
      context.fireChannelRead(data)
      return
    }
    guard buffer.readableBytes > 0 else { return }
    configured = true
    var t = target
    let clientTLS = Self.looksLikeTLS(buffer)
    if t.inference == nil { t.tls = clientTLS }
    do {
      var handlers: [ChannelHandler] = []
      if clientTLS {
        guard let tls = proxy.tls else { throw TLSSetupError(message: "TLS termination is unavailable") }
        handlers.append(NIOSSLServerHandler(context: try tls.ca.serverContext(for: target.clientHost)))
      } else if t.inference != nil {
        throw TLSSetupError(message: "inference.local is served over HTTPS only")
      }
      handlers += InspectedConnection.httpHandlers(proxy: proxy, target: t)
      try context.pipeline.syncOperations.addHandlers(handlers)
    } catch {
      proxy.onDenied(.init(method: "CONNECT", host: target.clientHost, port: target.port, binary: target.binary, reason: "cannot inspect the tunnel: \(error)"))
      context.close(promise: nil)
      return
    }
    context.fireChannelRead(data)
    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
  }

  func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
