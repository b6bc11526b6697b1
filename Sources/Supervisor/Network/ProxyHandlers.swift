import CSockDiag
import Foundation
import NIOCore
import NIOPosix

/// Reads one request head, has it admitted, then joins the client to the upstream connection: a
/// ``SpliceRelay`` for uninspected connections, L7 inspection (``InspectedConnection``) for the rest.
final class ProxyRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  typealias OutboundOut = ByteBuffer
  static let maxHead = 64 * 1024

  let proxy: PolicyProxy
  private var buffered: ByteBuffer?
  private var deciding = false
  /// The request head as read (an inspected absolute-form request is parsed again by the HTTP decoder).
  private var rawHead = ""

  /// The client connection's descriptor (NIO's): duplicated when the connection leaves NIO for a
  /// ``SpliceRelay``, never used otherwise.
  let socket: Int32

  init(proxy: PolicyProxy, socket: Int32) {
    self.proxy = proxy
    self.socket = socket
  }

  /// Seconds a client has to send its request head; then the connection is closed (an idle connection
  /// must not hold the proxy's resources).
  static let headTimeout: Int64 = 10

  func channelActive(context: ChannelHandlerContext) {
    let channel = context.channel
    context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(Self.headTimeout)) {
      if !self.deciding { channel.close(promise: nil) }
    }
    context.fireChannelActive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var chunk = unwrapInboundIn(data)
    if buffered == nil { buffered = chunk } else { buffered!.writeBuffer(&chunk) }
    guard !deciding else { return }
    let view = buffered!.readableBytesView
    guard let end = Self.headEnd(view) else {
      if view.count > Self.maxHead { respond(context, 431, "Request Header Fields Too Large", "openshell: request head exceeds 64 KiB") }
      return
    }
    guard end <= Self.maxHead else {
      respond(context, 431, "Request Header Fields Too Large", "openshell: request head exceeds 64 KiB")
      return
    }
    let headText = String(decoding: view[view.startIndex..<(view.startIndex + end)], as: UTF8.self)
    buffered!.moveReaderIndex(forwardBy: end + 4)
    rawHead = headText + "\r\n\r\n"
    let head: ProxyRequestHead
    do { head = try ProxyRequestHead.parse(headText) } catch ProxyRequestHead.ParseError.malformed(let why) {
      respond(context, 400, "Bad Request", "openshell: \(why)")
      return
    } catch {
      respond(context, 400, "Bad Request", "openshell: malformed request")
      return
    }
    deciding = true
    context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
    let proxy = self.proxy
    let peer = context.channel.remoteAddress
    let local = context.channel.localAddress
    if head.host == InferenceRouter.host { return routeInference(context, head, peer: peer, local: local) }
    proxy.pool.runIfActive(eventLoop: context.eventLoop) {
      proxy.admit(host: head.host, port: head.port, peer: peer, local: local)
    }.assumeIsolated().whenComplete { result in
      switch result {
      case .failure(let error):
        self.deny(context, head, PolicyProxy.Denied(binary: nil, reason: "\(error)"))
      case .success(let admission):
        switch admission.verdict {
        case .failure(let denied): self.deny(context, head, denied)
        case .success(let ok) where ok.inspection != nil:
          let target = InspectedTarget(
            host: head.host, port: head.port, addresses: ok.addresses, binary: ok.binary, tls: false, clientHost: head.host, inference: nil)
          self.inspect(context, head, target, generation: ok.generation)
        case .success(let ok): self.connect(context, head, ok.addresses, ok.generation, ok.binary)
        }
      }
    }
  }

  /// Offset of the `\r\n\r\n` ending the head, if present.
  static func headEnd(_ view: ByteBufferView) -> Int? {
    guard view.count >= 4 else { return nil }
    var i = view.startIndex
    while i + 3 < view.endIndex {
      if view[i] == 13, view[i + 1] == 10, view[i + 2] == 13, view[i + 3] == 10 { return i - view.startIndex }
      i += 1
    }
    return nil
  }

  func deny(_ context: ChannelHandlerContext, _ head: ProxyRequestHead, _ denied: PolicyProxy.Denied) {
    proxy.onDenied(.init(method: head.method, host: head.host, port: head.port, binary: denied.binary, reason: denied.reason))
    let target = "\(head.host):\(head.port)"
    let verb = head.isConnect ? "CONNECT \(target) refused" : "\(head.method) to \(target) denied"
    respond(context, 403, "Forbidden", "openshell: \(verb): \(denied.reason)")
  }

  func respond(_ context: ChannelHandlerContext, _ code: Int, _ phrase: String, _ body: String) {
    let text = body + "\n"
    let reason = body.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
    let response =
      "HTTP/1.1 \(code) \(phrase)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(text.utf8.count)\r\nX-OpenShell-Reason: \(reason)\r\nConnection: close\r\n\r\n\(text)"
    context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: response))).assumeIsolated().whenComplete { _ in
      context.close(promise: nil)
    }
  }

  /// Hands an admitted connection to L7 inspection (``InspectedConnection``): a CONNECT is answered
  /// `200` and its tunnel sniffed for TLS; an absolute-form request is fed to the HTTP decoder again.
  /// - Parameter generation: the policy generation it was admitted under (nil for `inference.local`,
  ///   which no policy governs); the connection is then registered for re-decision on policy swaps.
  func inspect(_ context: ChannelHandlerContext, _ head: ProxyRequestHead, _ target: InspectedTarget, generation: UInt64?) {
    let client = context.channel
    guard client.isActive else { return }
    if head.isConnect, proxy.tls == nil {
      return deny(
        context, head,
        PolicyProxy.Denied(
          binary: target.binary,
          reason: "TLS termination is unavailable in this sandbox (see its log): an L7 endpoint is never tunnelled uninspected (fail closed)"))
    }
    if let generation, let binary = target.binary {
      let policy = proxy.policy
      let id = policy.opened(.init(host: head.host, port: head.port, binary: binary, addresses: target.addresses, channels: [client]), generation: generation)
      client.closeFuture.whenComplete { _ in policy.closed(id) }
    }
    var feed = client.allocator.buffer(capacity: 0)
    do {
      if head.isConnect {
        context.writeAndFlush(wrapOutboundOut(client.allocator.buffer(string: "HTTP/1.1 200 Connection Established\r\n\r\n")), promise: nil)
        try InspectedConnection.startTunnel(client, proxy: proxy, target: target)
      } else {
        try InspectedConnection.startPlain(client, proxy: proxy, target: target)
        feed.writeString(rawHead)
      }
    } catch {
      client.close(promise: nil)
      return
    }
    if var rest = buffered { feed.writeBuffer(&rest) }
    buffered = nil
    if feed.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(feed)) }
    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    client.setOption(.autoRead, value: true).whenComplete { _ in }
  }

  private func connect(_ context: ChannelHandlerContext, _ head: ProxyRequestHead, _ addresses: [IPAddress], _ generation: UInt64, _ binary: CallerBinary) {
    let port = head.port
    proxy.pool.runIfActive(eventLoop: context.eventLoop) {
      try PolicyProxy.dialRaw(addresses, port: port)
    }.assumeIsolated().whenComplete { result in
      switch result {
      case .failure(let error):
        self.respond(context, 502, "Bad Gateway", "openshell: cannot connect to \(head.host):\(head.port): \(error)")
      case .success(let upstream):
        self.relay(context, head, upstream, addresses, generation, binary)
      }
    }
  }

  /// Moves the admitted connection out of NIO into a ``SpliceRelay`` with the upstream socket: the
  /// `200` of a CONNECT (or the request head upstream) and any bytes read past the head are written
  /// first, then the relay owns both sockets; NIO's channel is closed (its descriptor only: the socket
  /// lives on in the relay's duplicate). The connection stays counted and registered for re-decision.
  private func relay(
    _ context: ChannelHandlerContext, _ head: ProxyRequestHead, _ upstream: Int32, _ addresses: [IPAddress], _ generation: UInt64, _ binary: CallerBinary
  ) {
    let client = context.channel
    guard client.isActive else {
      close(upstream)
      return
    }
    let clientFD = dup(socket)
    guard clientFD >= 0 else {
      close(upstream)
      respond(context, 502, "Bad Gateway", "openshell: cannot relay to \(head.host):\(head.port): out of descriptors")
      return
    }
    func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
      bytes.isEmpty || bytes.withUnsafeBufferPointer { csockdiag_write_all(fd, $0.baseAddress, $0.count, 10_000) } == 0
    }
    var toUpstream: [UInt8] = head.isConnect ? [] : Array(head.upstreamHead().utf8)
    if let rest = buffered, rest.readableBytes > 0 { toUpstream += rest.readableBytesView }
    buffered = nil
    let ok = (head.isConnect ? send(clientFD, Array("HTTP/1.1 200 Connection Established\r\n\r\n".utf8)) : true) && send(upstream, toUpstream)
    guard ok, let relay = SpliceRelay(client: clientFD, upstream: upstream) else {
      close(clientFD)
      close(upstream)
      client.close(promise: nil)
      return
    }
    let proxy = self.proxy
    let policy = proxy.policy
    // The relay's own slot (the NIO channel gives its slot back when it closes below).
    proxy.connections.withLock { $0 += 1 }
    let id = policy.opened(
      .init(host: head.host, port: head.port, binary: binary, addresses: addresses, channels: [], cancel: { relay.cancel() }), generation: generation)
    relay.start {
      policy.closed(id)
      proxy.connections.withLock { $0 -= 1 }
    }
    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    client.close(promise: nil)
  }

  func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
