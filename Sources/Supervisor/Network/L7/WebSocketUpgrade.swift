import Crypto
import Foundation
import NIOCore
import NIOHTTP1

/// HTTP `Upgrade` on inspected connections, as OpenShell's L7 relay does it (enforcement-and-ssh.md §1.4,
/// row "L7": "WebSocket upgrade"; upstream `l7/rest.rs`, `l7/relay.rs`):
///
/// - Only WebSocket (RFC 6455 §4.1) is honoured: a `GET` with `Upgrade: websocket`, `Connection: Upgrade`,
///   exactly one `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13`. It is decided like any request
///   (method `GET`, its path and query) and goes upstream with exactly `Connection: Upgrade` and
///   `Upgrade: websocket`. A malformed WebSocket attempt is refused (`400`); an `h2c` upgrade is refused
///   (`403`, HTTP/2 is not inspected); any other `Upgrade` is removed from the request (with the
///   `upgrade` token of `Connection`), so the upstream never switches protocols behind the proxy's back.
/// - The upstream's `101` must answer a WebSocket request and carry `Upgrade: websocket`,
///   `Connection: Upgrade` and the `Sec-WebSocket-Accept` derived from the key; otherwise `502`.
/// - After the `101`, both sides are relayed as bytes (``RawRelayHandler``) for the connection's life:
///   L7 rules no longer apply to it (as upstream's "raw bidirectional relay"), the policy generation
///   still does (a revision that no longer allows the host closes it). Placeholders in the client's
///   text messages are resolved only where every matching endpoint sets `websocket_credential_rewrite`
///   (``WebSocketCredentialRewriter``); elsewhere a placeholder sent in a frame stays a placeholder.
enum WebSocketUpgrade {
  /// What an admitted request asks for.
  enum Kind: Equatable {
    case none
    /// A valid WebSocket upgrade with this `Sec-WebSocket-Key`; `rewrite`: placeholders in the client's
    /// text messages are resolved (``WebSocketCredentialRewriter``).
    case websocket(key: String, rewrite: Bool)
  }

  static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

  private static func tokens(_ headers: HTTPHeaders, _ name: String) -> [String] {
    headers[name].flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
  }

  /// Classifies `head` and rewrites its upgrade headers.
  /// - Returns: the kind, or the refusal (`400` malformed WebSocket attempt, `403` h2c).
  /// - Parameter rewrite: every matching endpoint sets `websocket_credential_rewrite` (then the request
  ///   goes without `Sec-WebSocket-Extensions`: compressed frames could not be rewritten).
  static func admit(_ head: inout HTTPRequestHead, rewrite: Bool = false) -> Result<Kind, L7ClientHandler.Rejection> {
    let upgrade = tokens(head.headers, "upgrade")
    let connectionUpgrade = tokens(head.headers, "connection").contains("upgrade")
    let keys = head.headers["sec-websocket-key"]
    let attempt = upgrade.contains("websocket") || !keys.isEmpty || head.headers.contains(name: "sec-websocket-version")
    if upgrade.contains("h2c") && !attempt {
      return .failure(.init(status: .forbidden, message: "HTTP/2 cleartext upgrade (h2c) is not supported for L7-inspected endpoints"))
    }
    guard attempt else {
      if !upgrade.isEmpty || connectionUpgrade {
        head.headers.remove(name: "upgrade")
        let kept = tokens(head.headers, "connection").filter { $0 != "upgrade" }
        head.headers.remove(name: "connection")
        if !kept.isEmpty { head.headers.add(name: "connection", value: kept.joined(separator: ", ")) }
      }
      return .success(.none)
    }
    func bad(_ why: String) -> Result<Kind, L7ClientHandler.Rejection> {
      .failure(.init(status: .badRequest, message: "malformed WebSocket upgrade: \(why)"))
    }
    guard head.method == .GET else { return bad("it must use GET") }
    guard upgrade.contains("websocket") else { return bad("Upgrade: websocket is missing") }
    guard connectionUpgrade else { return bad("Connection: Upgrade is missing") }
    guard keys.count == 1, let key = keys.first?.trimmingCharacters(in: .whitespaces),
      Data(base64Encoded: key)?.count == 16
    else { return bad("exactly one Sec-WebSocket-Key of 16 bytes is required") }
    guard head.headers["sec-websocket-version"].map({ $0.trimmingCharacters(in: .whitespaces) }) == ["13"] else {
      return bad("Sec-WebSocket-Version must be 13")
    }
    head.headers.remove(name: "upgrade")
    head.headers.remove(name: "connection")
    head.headers.add(name: "connection", value: "Upgrade")
    head.headers.add(name: "upgrade", value: "websocket")
    if rewrite { head.headers.remove(name: "sec-websocket-extensions") }
    return .success(.websocket(key: key, rewrite: rewrite))
  }

  /// The `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2: base64 of SHA-1 of key + GUID).
  static func accept(_ key: String) -> String {
    Data(Insecure.SHA1.hash(data: Data((key + guid).utf8))).base64EncodedString()
  }

  /// Checks the upstream's `101` for a request of `kind`.
  /// - Returns: nil when the switch may happen, else why not.
  static func check(_ head: HTTPResponseHead, for kind: Kind) -> String? {
    guard case .websocket(let key, _) = kind else { return "101 Switching Protocols without an upgrade request" }
    guard tokens(head.headers, "upgrade").contains("websocket") else { return "WebSocket 101 without Upgrade: websocket" }
    guard tokens(head.headers, "connection").contains("upgrade") else { return "WebSocket 101 without Connection: Upgrade" }
    guard head.headers["sec-websocket-accept"].map({ $0.trimmingCharacters(in: .whitespaces) }) == [accept(key)] else {
      return "WebSocket 101 with a wrong Sec-WebSocket-Accept"
    }
    return nil
  }

  /// Replaces the HTTP handlers of `client` and `upstream` (same event loop) by a byte relay between
  /// them; bytes the upstream sent right after its `101` (held by its decoder) are relayed first.
  /// - Parameter rewrite: set when the client's text messages get their placeholders resolved
  ///   (``WebSocketCredentialRewriter``); called with the keys of each message that carried values.
  static func switchToRelay(client: Channel, upstream: Channel, rewrite: (@Sendable (Set<String>) -> Void)?) throws {
    let c = RawRelayHandler()
    let u = RawRelayHandler()
    c.partner = u
    u.partner = c
    let cs = client.pipeline.syncOperations
    let us = upstream.pipeline.syncOperations
    if let rewrite {
      try cs.addHandler(ByteToMessageHandler(WebSocketCredentialRewriter(values: { ProviderEnvironmentAgent.values }, onSubstituted: rewrite)))
    }
    try cs.addHandler(c)
    try us.addHandler(u)
    try us.removeHandler(try us.handler(type: L7UpstreamHandler.self), promise: nil)
    try us.removeHandler(try us.handler(type: HTTPRequestEncoder.self), promise: nil)
    try us.removeHandler(try us.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self), promise: nil)
    try cs.removeHandler(try cs.handler(type: L7ClientHandler.self), promise: nil)
    try cs.removeHandler(try cs.handler(type: HTTPResponseEncoder.self), promise: nil)
    try cs.removeHandler(try cs.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self), promise: nil)
  }
}

/// One side of a byte relay between two channels on the same event loop: what one reads the other
/// writes; a side reads only while its partner can take more (backpressure); when one side ends, the
/// other is closed. Bytes an HTTP decoder held when it was removed arrive as its
/// `leftoverDataWhenDone` error and are relayed too.
final class RawRelayHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  var partner: RawRelayHandler?
  private var context: ChannelHandlerContext?
  private var pendingRead = false

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }
  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
    partner = nil
  }

  private func write(_ buffer: ByteBuffer) { context?.write(wrapOutboundOut(buffer), promise: nil) }
  private func flush() { context?.flush() }
  private var isWritable: Bool { context?.channel.isWritable ?? false }
  private func close() { context?.close(promise: nil) }

  private func partnerWritabilityChanged(_ writable: Bool) {
    if writable, pendingRead, let context {
      pendingRead = false
      context.read()
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.write(unwrapInboundIn(data)) }
  func channelReadComplete(context: ChannelHandlerContext) { partner?.flush() }

  func channelInactive(context: ChannelHandlerContext) {
    partner?.close()
    context.fireChannelInactive()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    partner?.partnerWritabilityChanged(context.channel.isWritable)
    context.fireChannelWritabilityChanged()
  }

  func read(context: ChannelHandlerContext) {
    if partner?.isWritable ?? true { context.read() } else { pendingRead = true }
  }

  func errorCaught(context: ChannelHandlerContext, error: Error) {
    if case ByteToMessageDecoderError.leftoverDataWhenDone(let buffer) = error {
      partner?.write(buffer)
      partner?.flush()
      return
    }
    context.close(promise: nil)
  }
}
