import NIOCore
import NIOHTTP1

/// Serves ``HTTPEndpoints`` on an HTTP/1.1 connection chosen by ``ProtocolSniffer``, and hands
/// requests under ``ServiceURL/prefix`` to a ``ServiceForwarder`` (exposed services).
///
/// Sits behind NIO's `HTTPServerPipelineHandler`, which serialises pipelined requests and implements
/// quiescing (`ChannelShouldQuiesceEvent`): an idle keep-alive connection is closed at once, an in-flight
/// request is answered first (swift-build-notes.md §6.3). An `IdleStateHandler` read timeout closes
/// keep-alive connections that stay silent.
final class HTTPRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  private let endpoints: HTTPEndpoints
  private let restricted: Bool
  private var head: HTTPRequestHead?
  private var inFlight = false
  /// Set when the connection's request went to an exposed service.
  private var forward: ServiceForwarder?

  init(endpoints: HTTPEndpoints, restricted: Bool) {
    self.endpoints = endpoints
    self.restricted = restricted
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let part = unwrapInboundIn(data)
    // A connection that carries a service request belongs to it until it closes.
    if let forward {
      switch part {
      case .head: break  // a pipelined second request is not served
      case .body(let b): forward.body(b)
      case .end: forward.end()
      }
      return
    }
    switch part {
    case .head(let requestHead):
      if let router = endpoints.services, requestHead.uri.hasPrefix(ServiceURL.prefix) {
        inFlight = true
        let f = ServiceForwarder(context: context, head: requestHead, router: router, secure: endpoints.secure)
        forward = f
        f.start(restricted: restricted)
        return
      }
      head = requestHead
      inFlight = true
    case .body:
      break  // no route takes a body; it is discarded
    case .end:
      guard let requestHead = head else { return }
      head = nil
      respond(context: context, to: requestHead)
    }
  }

  private func respond(context: ChannelHandlerContext, to request: HTTPRequestHead) {
    let response = endpoints.respond(method: request.method.rawValue, uri: request.uri, restricted: restricted)
    endpoints.metrics?.recordHTTP(path: response.route, status: response.status)
    let keepAlive = request.isKeepAlive
    var headers = HTTPHeaders()
    headers.add(name: "Content-Type", value: response.contentType)
    headers.add(name: "Content-Length", value: String(response.body.utf8.count))
    for (name, value) in response.extraHeaders { headers.add(name: name, value: value) }
    if !keepAlive { headers.add(name: "Connection", value: "close") }
    let responseHead = HTTPResponseHead(
      version: request.version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
    context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
    if request.method != .HEAD && !response.body.isEmpty {
      let buffer = context.channel.allocator.buffer(string: response.body)
      context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }
    let done = context.writeAndFlushPromise(wrapOutboundOut(.end(nil)))
    inFlight = false
    if !keepAlive {
      let channel = context.channel
      done.whenComplete { _ in channel.close(promise: nil) }
    }
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read, !inFlight {
      context.close(promise: nil)
      return
    }
    context.fireUserInboundEventTriggered(event)
  }

  func channelInactive(context: ChannelHandlerContext) {
    forward?.clientGone()
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }
}

extension ChannelHandlerContext {
  fileprivate func writeAndFlushPromise(_ data: NIOAny) -> EventLoopFuture<Void> {
    let promise = eventLoop.makePromise(of: Void.self)
    writeAndFlush(data, promise: promise)
    return promise.futureResult
  }
}
