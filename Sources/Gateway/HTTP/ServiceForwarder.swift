import Foundation
import NIOCore
import NIOHTTP1

/// Forwards one HTTP/1.1 request on the gateway port to an exposed service (``ServiceRouter``) and
/// streams its response back byte for byte; the client connection closes after it (one request per
/// connection, so that every request passes the checks and the `Authorization` rule).
///
/// The upstream request: the same method and headers with the ``ServiceURL`` prefix removed from
/// the path; hop-by-hop headers (`Connection`, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
/// `Upgrade`) dropped, `Connection: close` and `X-Forwarded-Prefix`/`-Proto`/`-For` added;
/// `Authorization` dropped under STRIP. A chunked body is re-chunked, others pass as they are.
/// No WebSocket or other upgrades. Until the relay is open the HTTP/1.1 encoder answers refusals
/// (`4xx`/`5xx` with a one-line reason); afterwards it is removed and the service's bytes go out raw.
/// Backpressure: the request body is read at most 1 MiB ahead of the relay (autoRead off beyond),
/// the response is read from the relay only as fast as the client takes it.
///
/// All state is touched on the channel's event loop only.
final class ServiceForwarder: @unchecked Sendable {
  private let context: NIOLoopBound<ChannelHandlerContext>
  private let eventLoop: any EventLoop
  private let head: HTTPRequestHead
  private let router: ServiceRouter
  private let secure: Bool
  private var pending: [ByteBuffer] = []
  private var requestEnded = false
  private var upstream: AsyncStream<Data>.Continuation?
  private var opened: ServiceRouter.Opened?
  private var finished = false
  private var chunked = false
  private var unsent = 0
  private var paused = false

  init(context: ChannelHandlerContext, head: HTTPRequestHead, router: ServiceRouter, secure: Bool) {
    self.context = NIOLoopBound(context, eventLoop: context.eventLoop)
    self.eventLoop = context.eventLoop
    self.head = head
    self.router = router
    self.secure = secure
    chunked = head.headers[canonicalForm: "transfer-encoding"].contains { $0.lowercased() == "chunked" }
  }

  /// Checks the caller and opens the relay; refusals are answered at once.
  func start(restricted: Bool) {
    guard !restricted else { return refuse(403, "exposed services require TLS on this port") }
    guard let target = ServiceURL.parse(head.uri) else { return refuse(404, "not a service URL (\(ServiceURL.prefix)<workspace>/<sandbox>/<service or _>/…)") }
    guard let rest = target.rest else {
      // "/_svc/w/s/svc" → "/_svc/w/s/svc/" (relative links of the application resolve under it).
      let path = ServiceURL.path(workspace: target.workspace, sandbox: target.sandbox, service: target.service)
      let query = head.uri.firstIndex(of: "?").map { String(head.uri[$0...]) } ?? ""
      return respond(308, "moved to \(path)\n", extra: [("Location", path + query)])
    }
    let caller: CallerIdentity
    do {
      caller = try router.caller(remotePeer: PeerCertificateRegistry.remotePeerKey(context.value.channel))
    } catch {
      return refuse(error.status, error.message)
    }
    let peer = context.value.channel.remoteAddress?.ipAddress ?? ""
    let prefix = String(ServiceURL.path(workspace: target.workspace, sandbox: target.sandbox, service: target.service).dropLast())
    let router = self.router
    let loop = eventLoop
    Task {
      do {
        let opened = try await router.open(workspace: target.workspace, sandbox: target.sandbox, service: target.service, caller: caller)
        loop.execute { self.connected(opened, path: rest, prefix: prefix, peer: peer) }
      } catch let e as ServiceRouter.Refusal {
        loop.execute { self.refuse(e.status, e.message) }
      } catch {
        loop.execute { self.refuse(502, "\(error)") }
      }
    }
  }

  /// A body part of the request (kept until the relay is open).
  func body(_ buffer: ByteBuffer) {
    guard !finished else { return }
    if upstream != nil { send(encodeChunk(buffer)) } else { pending.append(buffer) }
  }

  func end() {
    requestEnded = true
    if upstream != nil, chunked { send(Data("0\r\n\r\n".utf8)) }
  }

  /// The client closed its connection.
  func clientGone() {
    finished = true
    opened?.channel.cancel()
    upstream?.finish()
  }

  private func encodeChunk(_ buffer: ByteBuffer) -> Data {
    let bytes = Data(buffer.readableBytesView)
    guard chunked else { return bytes }
    return Data(String(bytes.count, radix: 16).utf8) + Data("\r\n".utf8) + bytes + Data("\r\n".utf8)
  }

  private func send(_ data: Data) {
    guard !data.isEmpty else { return }
    unsent += data.count
    if unsent > 1 << 20, !paused {
      paused = true
      context.value.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
    }
    upstream?.yield(data)
  }

  private static let dropped: Set<String> = [
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer",
    "transfer-encoding", "upgrade", "x-forwarded-prefix", "x-forwarded-proto", "x-forwarded-for",
  ]

  /// The upstream request head (see the type's documentation).
  private func upstreamHead(path: String, prefix: String, peer: String, strip: Bool) -> Data {
    var text = "\(head.method.rawValue) \(path) HTTP/1.1\r\n"
    for (name, value) in head.headers {
      let lower = name.lowercased()
      if Self.dropped.contains(lower) || (strip && lower == "authorization") { continue }
      // A chunked request is sent chunked only: never both framings (request smuggling).
      if chunked && lower == "content-length" { continue }
      text += "\(name): \(value)\r\n"
    }
    text += "Connection: close\r\nX-Forwarded-Prefix: \(prefix)\r\nX-Forwarded-Proto: \(secure ? "https" : "http")\r\n"
    if !peer.isEmpty { text += "X-Forwarded-For: \(peer)\r\n" }
    if chunked { text += "Transfer-Encoding: chunked\r\n" }
    return Data((text + "\r\n").utf8)
  }

  private func connected(_ opened: ServiceRouter.Opened, path: String, prefix: String, peer: String) {
    guard !finished else {
      opened.channel.cancel()
      return
    }
    self.opened = opened
    let ctx = context.value
    // From here on the service's bytes go to the client unchanged: no HTTP/1.1 encoder, no pipelining.
    let ops = ctx.pipeline.syncOperations
    if let h = try? ops.context(handlerType: HTTPServerProtocolErrorHandler.self) { ops.removeHandler(context: h, promise: nil) }
    if let h = try? ops.context(handlerType: HTTPServerPipelineHandler.self) { ops.removeHandler(context: h, promise: nil) }
    if let h = try? ops.context(handlerType: HTTPResponseEncoder.self) { ops.removeHandler(context: h, promise: nil) }
    let (stream, continuation) = AsyncStream<Data>.makeStream()
    upstream = continuation
    let channel = opened.channel
    let loop = eventLoop
    // Request → service.
    Task {
      for await data in stream {
        await channel.sendWaiting(data)
        loop.execute { self.sent(data.count) }
      }
    }
    continuation.yield(upstreamHead(path: path, prefix: prefix, peer: peer, strip: opened.stripAuthorization))
    for b in pending { send(encodeChunk(b)) }
    pending = []
    if requestEnded, chunked { send(Data("0\r\n\r\n".utf8)) }
    // Service → client, as fast as the client takes it.
    let bound = context
    Task {
      var received = 0
      do {
        for try await data in channel.incoming {
          received += data.count
          let written = loop.flatSubmit {
            let c = bound.value
            return c.writeAndFlush(NIOAny(c.channel.allocator.buffer(bytes: data)))
          }
          try await written.get()
          channel.consumed(data.count)
        }
      } catch {}
      let nothing = received == 0
      loop.execute {
        self.finished = true
        self.upstream?.finish()
        channel.cancel()
        let c = bound.value
        if nothing {
          let body = "nothing answers on port \(opened.port) in the sandbox (is the service listening on 127.0.0.1:\(opened.port)?)\n"
          let raw =
            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
          c.writeAndFlush(NIOAny(c.channel.allocator.buffer(string: raw))).whenComplete { _ in c.close(promise: nil) }
        } else {
          c.close(promise: nil)
        }
      }
    }
  }

  private func sent(_ n: Int) {
    unsent -= n
    if paused, unsent < 256 << 10 {
      paused = false
      context.value.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
      context.value.read()
    }
  }

  private func refuse(_ status: Int, _ message: String) { respond(status, message + "\n") }

  /// A complete response through the HTTP/1.1 encoder, then the connection closes.
  private func respond(_ status: Int, _ body: String, extra: [(String, String)] = []) {
    finished = true
    let c = context.value
    var headers = HTTPHeaders()
    headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
    headers.add(name: "Content-Length", value: String(body.utf8.count))
    headers.add(name: "Connection", value: "close")
    for (k, v) in extra { headers.add(name: k, value: v) }
    c.write(
      NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers))), promise: nil)
    if head.method != .HEAD { c.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(c.channel.allocator.buffer(string: body)))), promise: nil) }
    c.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in c.close(promise: nil) }
  }
}
