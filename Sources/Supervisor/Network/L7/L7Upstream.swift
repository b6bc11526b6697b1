import NIOCore
import NIOHTTP1
import NIOSSL

/// The upstream side of an inspected connection: one connection, dialled on first use to the
/// admitted addresses (TCP_NODELAY), with TLS when the client spoke TLS — the upstream certificate is
/// verified against the system roots (plus the operator's extra roots) for the CONNECT host name, so
/// the proxy never forwards a sandbox's plaintext to an unverified server. Request parts sent before
/// the connection is up are queued. Lives on the client channel's event loop.
final class L7Upstream {
  private weak var client: L7ClientHandler?
  private let proxy: PolicyProxy
  private let target: InspectedTarget
  private let loop: EventLoop
  private var channel: Channel?
  private var handler: L7UpstreamHandler?
  private var pending: [HTTPClientRequestPart] = []
  private var closed = false

  init(client: L7ClientHandler, proxy: PolicyProxy, target: InspectedTarget, loop: EventLoop) {
    self.client = client
    self.proxy = proxy
    self.target = target
    self.loop = loop
    dial()
  }

  var isWritable: Bool { channel?.isWritable ?? false }

  /// The connection, once dialled (for the switch to a byte relay after a `101`).
  var rawChannel: Channel? { channel }

  func send(_ part: HTTPClientRequestPart) {
    guard let channel else {
      pending.append(part)
      return
    }
    channel.writeAndFlush(part, promise: nil)
  }

  func close() {
    closed = true
    channel?.close(promise: nil)
  }

  func clientWritable() { handler?.release() }

  private func dial() {
    let target = self.target
    let proxy = self.proxy
    proxy.dial(target.addresses, port: target.port, on: loop).assumeIsolated().flatMapThrowing { channel -> Channel in
      let sync = channel.pipeline.syncOperations
      if target.tls {
        guard let tls = proxy.tls else { throw TLSSetupError(message: "TLS termination is unavailable") }
        // SNI and name verification use the host name; an IP literal is verified against the chain only.
        let name = IPAddress(target.host) == nil ? target.host : nil
        try sync.addHandler(try NIOSSLClientHandler(context: tls.upstream, serverHostname: name))
      }
      // Informational responses (100 Continue) are forwarded, so a client waiting for one is not stalled.
      try sync.addHandler(HTTPRequestEncoder())
      try sync.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .fireError, informationalResponseStrategy: .forward)))
      let handler = L7UpstreamHandler(owner: self)
      try sync.addHandler(handler)
      self.handler = handler
      return channel
    }.whenComplete { result in
      switch result {
      case .failure(let error):
        self.client?.upstreamEnded("cannot connect: \(error)")
      case .success(let channel):
        guard !self.closed else {
          channel.close(promise: nil)
          return
        }
        self.channel = channel
        for part in self.pending { channel.write(part, promise: nil) }
        self.pending = []
        channel.flush()
        channel.setOption(.autoRead, value: true).whenComplete { _ in }
        self.client?.releaseRead()
      }
    }
  }

  // Called by the handler.
  fileprivate func response(_ part: HTTPClientResponsePart) { client?.upstreamResponse(part) }
  fileprivate func readComplete() { client?.flushResponse() }
  fileprivate var clientIsWritable: Bool { client?.isWritable ?? false }
  fileprivate func ended(_ error: String?) {
    guard !closed else { return }
    closed = true
    client?.upstreamEnded(error)
  }
  fileprivate func writable() { client?.releaseRead() }
}

/// Forwards response parts to the client; reads from the upstream only while the client can take
/// more (backpressure for large downloads).
final class L7UpstreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPClientResponsePart
  typealias OutboundIn = HTTPClientRequestPart
  typealias OutboundOut = HTTPClientRequestPart

  private let owner: L7Upstream
  private var context: ChannelHandlerContext?
  private var heldRead = false
  private var failure: String?

  fileprivate init(owner: L7Upstream) { self.owner = owner }

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) { owner.response(unwrapInboundIn(data)) }
  func channelReadComplete(context: ChannelHandlerContext) { owner.readComplete() }

  func read(context: ChannelHandlerContext) {
    if owner.clientIsWritable { context.read() } else { heldRead = true }
  }

  func release() {
    guard heldRead, let context else { return }
    heldRead = false
    context.read()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    if context.channel.isWritable { owner.writable() }
    context.fireChannelWritabilityChanged()
  }

  func channelInactive(context: ChannelHandlerContext) {
    owner.ended(failure)
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: Error) {
    if failure == nil { failure = error is NIOSSLError || error is BoringSSLError ? "TLS: \(error)" : "\(error)" }
    context.close(promise: nil)
  }
}
