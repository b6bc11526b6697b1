import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// Decides and forwards each HTTP/1.1 request of an inspected connection, one at a time (a
/// pipelined request waits until the response before it has ended).
///
/// Per request: the current policy generation is asked again for the host, port and binary
/// (``ProxyPolicy/decide(host:port:binary:)``), then the L7 rules of the matching endpoints
/// (``L7Rules``). A denied request is answered `403` with the reason (body and `X-OpenShell-Reason`),
/// reported to the denial reporter, and the connection is closed after its body was read; it never
/// reaches the upstream. An allowed request gets its credential placeholders resolved
/// (``CredentialPlaceholders``; an unknown one is answered `500`; in bodies as ``BodyCredentials``
/// says: resolved where the endpoint opts in, else a placeholder refuses the request before its bytes
/// leave), proxy headers removed, and is
/// forwarded over one upstream connection per client connection (dialled on first use, to the
/// addresses admitted at CONNECT time; TLS verified against the system roots when the client spoke
/// TLS). `enforcement: audit` endpoints report L7 denials but forward the request.
final class L7ClientHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundIn = HTTPServerResponsePart
  typealias OutboundOut = HTTPServerResponsePart

  struct Rejection: Error {
    var status: HTTPResponseStatus
    var message: String
  }

  enum State {
    case idle, forwarding, awaitingResponse, closing
    case rejecting(Rejection)
    /// An inference request whose body is collected, rewritten, then sent.
    case buffering(HTTPRequestHead, ByteBuffer)
    /// A request whose body is collected for credential placeholders (``BodyCredentials``).
    case rewriting(HTTPRequestHead, [UInt8])
    /// A request whose body is collected to be hashed for its SigV4 signature.
    case signing(HTTPRequestHead, [UInt8], SigV4Signer)
  }

  let proxy: PolicyProxy
  let target: InspectedTarget
  var context: ChannelHandlerContext?
  var state = State.idle
  private var queue = CircularBuffer<HTTPServerRequestPart>()
  var upstream: L7Upstream?
  private var heldRead = false
  var closeAfterResponse = false
  var responseStarted = false
  private var informational = false
  /// The body guard of the request being forwarded (``L7Admission/BodyMode/guarded``).
  var bodyGuard: MarkerGuard?
  /// The upgrade the request being forwarded asked for, and whether its `101` was accepted.
  var upgrade = WebSocketUpgrade.Kind.none
  var switching = false
  /// The credential keys the head of the request being admitted carries (recorded when it is sent).
  var headKeys = Set<String>()

  init(proxy: PolicyProxy, target: InspectedTarget) {
    self.proxy = proxy
    self.target = target
  }

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    queue.append(unwrapInboundIn(data))
    drain()
  }

  private func drain() {
    while let part = queue.first {
      switch state {
      case .awaitingResponse: return releaseRead()
      case .closing:
        queue.removeAll()
        return
      default: break
      }
      queue.removeFirst()
      handle(part)
    }
    releaseRead()
  }

  private func handle(_ part: HTTPServerRequestPart) {
    switch (part, state) {
    case (.head(let head), .idle) where target.inference != nil:
      closeAfterResponse = !head.isKeepAlive
      responseStarted = false
      let inference = target.inference!
      switch InferenceRouter.admit(head, route: inference.route, endpoint: inference.endpoint) {
      case .failure(let r):
        report(head.method.rawValue, r.message)
        state = .rejecting(r)
      case .success(let (forwarded, rewrite)):
        if rewrite {
          state = .buffering(forwarded, context!.channel.allocator.buffer(capacity: 0))
        } else {
          state = .forwarding
          upstreamConnection().send(.head(forwarded))
        }
      }
    case (.body(var bytes), .buffering(let head, var body)):
      guard body.readableBytes + bytes.readableBytes <= InferenceRouter.maxBody else {
        let r = Rejection(status: .payloadTooLarge, message: "openshell: inference.local: request body over \(InferenceRouter.maxBody) bytes")
        report(head.method.rawValue, r.message)
        state = .rejecting(r)
        return
      }
      body.writeBuffer(&bytes)
      state = .buffering(head, body)
    case (.end(let trailers), .buffering(var head, let body)):
      do {
        let rewritten = try InferenceRouter.rewriteBody(body, model: target.inference!.route.modelID)
        head.headers.replaceOrAdd(name: "content-length", value: "\(rewritten.readableBytes)")
        state = .awaitingResponse
        let u = upstreamConnection()
        u.send(.head(head))
        u.send(.body(.byteBuffer(rewritten)))
        u.send(.end(trailers))
      } catch let r as Rejection {
        report(head.method.rawValue, r.message)
        respondAndClose(r.status, r.message)
      } catch {
        respondAndClose(.internalServerError, "openshell: inference.local: \(error)")
      }
    case (.head(let head), .idle):
      closeAfterResponse = !head.isKeepAlive
      responseStarted = false
      switch L7Admission.admit(head, target: target, proxy: proxy) {
      case .failure(let r): state = .rejecting(r)
      case .success(let admitted):
        let forwarded = admitted.head
        let mode = admitted.body
        upgrade = admitted.upgrade
        headKeys = admitted.keys
        // The client's decoder stops at an upgrade request: unless it switches, the connection ends.
        if head.headers.contains(name: "upgrade") { closeAfterResponse = true }
        bodyGuard = mode == .guarded ? MarkerGuard() : nil
        if mode == .rewrite {
          startRewrite(forwarded)
        } else if case .sign(let signer) = mode {
          startSigning(forwarded, signer)
        } else {
          state = .forwarding
          sendHead(forwarded)
        }
      }
    case (.body(let bytes), .rewriting), (.body(let bytes), .signing): collect(bytes)
    case (.end, .rewriting(let head, let body)): finishRewrite(head, body)
    case (.end, .signing(let head, let body, let signer)): finishSigned(head, body, signer)
    case (.body(let bytes), .forwarding):
      guard bodyGuard != nil else { return upstreamConnection().send(.body(.byteBuffer(bytes))) }
      do { send(try bodyGuard!.pass(bytes.readableBytesView)) } catch {
        // Part of the body may be upstream already, never the placeholder: the request is cut off.
        upstream?.close()
        upstream = nil
        refuseBody(nil, error)
      }
    case (.end(let trailers), .forwarding):
      if bodyGuard != nil { send(bodyGuard!.finish()) }
      bodyGuard = nil
      state = .awaitingResponse
      upstreamConnection().send(.end(trailers))
    case (.end, .rejecting(let r)): respondAndClose(r.status, r.message)
    case (.body, .rejecting): break
    default: fail(.badRequest, "openshell: unexpected request part")
    }
  }

  /// Records an inference.local refusal as a denial (policy refusals are recorded by ``L7Admission``).
  private func report(_ method: String, _ message: String) {
    proxy.onDenied(.init(method: method, host: target.clientHost, port: 443, binary: target.binary, reason: message))
  }

  /// Sends a request's head upstream and records the credential substitutions it carries (``headKeys``
  /// and `extraKeys`, e.g. those of a rewritten body): the values are on their way from here on.
  func sendHead(_ head: HTTPRequestHead, extraKeys: Set<String> = []) {
    let keys = headKeys.union(extraKeys)
    headKeys = []
    upstreamConnection().send(.head(head))
    if !keys.isEmpty {
      proxy.onSubstituted(.init(keys: keys, host: target.host, port: target.port, binary: target.binary))
    }
  }

  func upstreamConnection() -> L7Upstream {
    if let upstream { return upstream }
    let u = L7Upstream(client: self, proxy: proxy, target: target, loop: context!.eventLoop)
    upstream = u
    return u
  }

  // MARK: reading from the client, with backpressure

  private var wantsRead: Bool {
    switch state {
    case .idle, .rejecting, .buffering, .rewriting, .signing: return true
    case .forwarding: return upstream?.isWritable ?? true
    case .awaitingResponse, .closing: return false
    }
  }

  func read(context: ChannelHandlerContext) {
    if wantsRead { context.read() } else { heldRead = true }
  }

  /// Lets a held read through when the state allows it (called when the upstream becomes writable).
  func releaseRead() {
    guard heldRead, wantsRead, let context else { return }
    heldRead = false
    context.read()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    if context.channel.isWritable { upstream?.clientWritable() }
    context.fireChannelWritabilityChanged()
  }

  var isWritable: Bool { context?.channel.isWritable ?? false }

  // MARK: responses from the upstream

  func upstreamResponse(_ part: HTTPClientResponsePart) {
    guard let context else { return }
    switch part {
    case .head(let head) where head.status == .switchingProtocols:
      if let why = WebSocketUpgrade.check(head, for: upgrade) {
        upstream?.close()
        upstream = nil
        return fail(.badGateway, "openshell: upstream \(target.host):\(target.port): \(why)")
      }
      switching = true
      responseStarted = true
      context.write(wrapOutboundOut(.head(head)), promise: nil)
    case .end where switching:
      switchToRelay(context)
    case .head(var head):
      informational = head.status.code < 200 && head.status != .switchingProtocols
      if !informational {
        responseStarted = true
        if !head.isKeepAlive { closeAfterResponse = true }
        if closeAfterResponse { head.headers.replaceOrAdd(name: "connection", value: "close") }
      }
      context.write(wrapOutboundOut(.head(head)), promise: nil)
      if informational { context.flush() }
    case .body(let bytes): context.write(wrapOutboundOut(.body(.byteBuffer(bytes))), promise: nil)
    case .end(let trailers):
      let channel = context.channel
      if closeAfterResponse {
        state = .closing
        context.writeAndFlush(wrapOutboundOut(.end(trailers))).whenComplete { _ in channel.close(promise: nil) }
      } else {
        context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
        state = .idle
        drain()
      }
    }
  }

  /// Flushes what the upstream's last read produced; a `101` waits for the switch to the relay, so the
  /// client cannot send frames while the HTTP handlers are still in place.
  func flushResponse() {
    if !switching { context?.flush() }
  }

  /// The upstream connection ended or failed (`error` when it failed before a response).
  func upstreamEnded(_ error: String?) {
    upstream = nil
    switch state {
    case .forwarding, .awaitingResponse:
      fail(.badGateway, "openshell: upstream \(target.host):\(target.port): \(error ?? "connection closed before the response ended")")
    default: break
    }
  }

  /// Answers `status` when no response has started yet, else just closes.
  func fail(_ status: HTTPResponseStatus, _ message: String) {
    guard !responseStarted else {
      state = .closing
      context?.close(promise: nil)
      return
    }
    respondAndClose(status, message)
  }

  private func respondAndClose(_ status: HTTPResponseStatus, _ message: String) {
    guard let context else { return }
    state = .closing
    let body = message + "\n"
    // Printable ASCII only: the path in a reason is the agent's, and a header value must stay one line.
    let reason = String(String.UnicodeScalarView(message.unicodeScalars.map { (0x20...0x7e).contains($0.value) ? $0 : "?" }))
    var headers = HTTPHeaders()
    headers.add(name: "content-type", value: "text/plain; charset=utf-8")
    headers.add(name: "content-length", value: "\(body.utf8.count)")
    headers.add(name: "x-openshell-reason", value: reason)
    headers.add(name: "connection", value: "close")
    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
    context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
    let channel = context.channel
    context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
  }

  func channelInactive(context: ChannelHandlerContext) {
    state = .closing
    upstream?.close()
    upstream = nil
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: Error) {
    if error is HTTPParserError, !responseStarted, case .idle = state {
      return respondAndClose(.badRequest, "openshell: malformed HTTP request")
    }
    context.close(promise: nil)
  }
}
