import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// The loopback redirect receiver of the authorization-code flow (RFC 8252 §7.3): an HTTP/1.1 listener
/// on `127.0.0.1:<ephemeral port>` that waits for one `GET /callback?…` from the browser, answers it
/// with a short page and hands over the query parameters. Other paths get 404 (browsers also ask for
/// `/favicon.ico`). It listens on loopback only and stops after the first callback or on ``close()``.
final class LoopbackRedirect: Sendable {
  let port: Int
  private let channel: any Channel
  private let stream: AsyncStream<[String: String]>

  var redirectURI: String { "http://127.0.0.1:\(port)/callback" }

  private init(port: Int, channel: any Channel, stream: AsyncStream<[String: String]>) {
    self.port = port
    self.channel = channel
    self.stream = stream
  }

  /// Binds the listener.
  static func start() async throws -> LoopbackRedirect {
    let (stream, continuation) = AsyncStream<[String: String]>.makeStream(bufferingPolicy: .bufferingNewest(1))
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { child in
        child.pipeline.configureHTTPServerPipeline().flatMap {
          child.pipeline.addHandler(CallbackHandler(deliver: { continuation.yield($0) }))
        }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    guard let port = channel.localAddress?.port else { throw CLIError("cannot listen on 127.0.0.1 for the login redirect") }
    return LoopbackRedirect(port: port, channel: channel, stream: stream)
  }

  /// The callback's query parameters, or nil after `timeout`.
  func wait(timeout: Duration) async -> [String: String]? {
    let stream = self.stream
    return await withTaskGroup(of: [String: String]?.self) { group in
      group.addTask {
        for await q in stream { return q }
        return nil
      }
      group.addTask {
        try? await Task.sleep(for: timeout)
        return nil
      }
      let first = await group.next() ?? nil
      group.cancelAll()
      return first
    }
  }

  func close() { channel.close(promise: nil) }
}

/// Answers `GET /callback` and passes its query on.
private final class CallbackHandler: ChannelInboundHandler, @unchecked Sendable {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  let deliver: @Sendable ([String: String]) -> Void
  private var head: HTTPRequestHead?

  init(deliver: @escaping @Sendable ([String: String]) -> Void) { self.deliver = deliver }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let h): head = h
    case .body: break
    case .end:
      guard let h = head else { return }
      head = nil
      let components = URLComponents(string: h.uri)
      let status: HTTPResponseStatus
      let page: String
      if h.method == .GET, components?.path == "/callback" {
        var query: [String: String] = [:]
        for item in components?.queryItems ?? [] { query[item.name] = item.value ?? "" }
        let ok = query["code"] != nil && query["error"] == nil
        status = .ok
        page =
          ok
          ? "<!doctype html><title>OpenShell</title><h1>Logged in</h1><p>You can close this window and return to the terminal.</p>"
          : "<!doctype html><title>OpenShell</title><h1>Login failed</h1><p>Return to the terminal for details.</p>"
        deliver(query)
      } else {
        status = .notFound
        page = "not found"
      }
      var headers = HTTPHeaders()
      headers.add(name: "Content-Type", value: "text/html; charset=utf-8")
      headers.add(name: "Content-Length", value: "\(page.utf8.count)")
      headers.add(name: "Connection", value: "close")
      headers.add(name: "Cache-Control", value: "no-store")
      context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: status, headers: headers))), promise: nil)
      context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: page)))), promise: nil)
      context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
    }
  }
}
