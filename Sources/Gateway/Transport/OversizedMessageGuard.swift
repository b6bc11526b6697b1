import GRPCNIOTransportHTTP2
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Answers a request message larger than the gateway's limit with a gRPC status — RESOURCE_EXHAUSTED and a
/// message naming the limit — instead of a reset stream (issue 17: "requests over 16 MiB are answered by a
/// connection reset").
///
/// Why here: grpc-swift-nio-transport 2.9.2 (`GRPCMessageDecoder`) refuses a message longer than
/// `maxRequestPayloadSize` by closing the HTTP/2 stream without trailers, so every client sees UNAVAILABLE
/// ("stream reset") and no reason. This handler sits first in each HTTP/2 stream channel (installed through
/// the transport's `onAcceptHTTP2Stream` callback), reads the 5-byte gRPC length prefix of each request
/// message as DATA frames pass (gRPC over HTTP/2: 1-byte compressed flag, 4-byte big-endian length) and,
/// as soon as a prefix declares more than ``limit`` bytes, answers trailers with `grpc-status: 8` (a
/// Trailers-Only response when no response headers were sent yet), drops the rest of the request and
/// closes the stream. The oversized body is therefore never buffered. Messages within the limit pass
/// untouched; `MessageSizeInterceptor` still checks decoded sizes with the same limit.
final class OversizedMessageGuard: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias InboundOut = HTTP2Frame.FramePayload
  typealias OutboundIn = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  /// Largest accepted request message (bytes of the length prefix, i.e. as sent on the wire).
  let limit: Int
  private var path = ""
  /// Bytes of the current message's length prefix seen so far (0–4 buffered).
  private var prefix: [UInt8] = []
  /// Body bytes of the current message still to come.
  private var remaining = 0
  private var responseHeadersSent = false
  private var rejected = false

  init(limit: Int) { self.limit = limit }

  /// Installs the guard on every HTTP/2 stream of a server transport configuration.
  static func install(limit: Int, on config: inout HTTP2ServerTransport.Custom<OnePortListenerFactory>.Config) {
    config.channelDebuggingCallbacks.onAcceptHTTP2Stream = { channel in
      channel.eventLoop.makeCompletedFuture {
        try channel.pipeline.syncOperations.addHandler(OversizedMessageGuard(limit: limit), position: .first)
      }
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard !rejected else { return }
    switch unwrapInboundIn(data) {
    case .headers(let h):
      if path.isEmpty, let p = h.headers.first(name: ":path") { path = p }
    case .data(let d):
      if case .byteBuffer(let buffer) = d.data, let declared = oversized(buffer) {
        reject(context, declared)
        return
      }
    default:
      break
    }
    context.fireChannelRead(data)
  }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    if rejected {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    if case .headers = unwrapOutboundIn(data) { responseHeadersSent = true }
    context.write(data, promise: promise)
  }

  /// Walks the message framing through `buffer`; the declared length of the first message over the limit.
  func oversized(_ buffer: ByteBuffer) -> Int? {
    var view = buffer.readableBytesView[...]
    while !view.isEmpty {
      if remaining > 0 {
        let n = min(remaining, view.count)
        remaining -= n
        view = view.dropFirst(n)
        continue
      }
      let take = min(5 - prefix.count, view.count)
      prefix += view.prefix(take)
      view = view.dropFirst(take)
      guard prefix.count == 5 else { break }
      let length = Int(prefix[1]) << 24 | Int(prefix[2]) << 16 | Int(prefix[3]) << 8 | Int(prefix[4])
      prefix = []
      if length > limit { return length }
      remaining = length
    }
    return nil
  }

  private func reject(_ context: ChannelHandlerContext, _ declared: Int) {
    rejected = true
    let method = path.split(separator: "/").last.map(String.init) ?? path
    let message = "\(method): request message of \(declared) bytes exceeds the \(limit)-byte limit"
    var trailers: HPACKHeaders = responseHeadersSent ? [:] : [":status": "200", "content-type": "application/grpc"]
    trailers.add(name: "grpc-status", value: "8")
    trailers.add(name: "grpc-message", value: Self.percentEncoded(message))
    let frame = HTTP2Frame.FramePayload.headers(.init(headers: trailers, endStream: true))
    // RST_STREAM NO_ERROR after the complete response asks the client to stop sending its body (RFC 9113
    // §8.1); a plain close would reset with CANCEL, which clients report instead of the status.
    context.write(wrapOutboundOut(frame), promise: nil)
    context.writeAndFlush(wrapOutboundOut(.rstStream(.noError))).whenComplete { _ in context.close(promise: nil) }
  }

  /// gRPC's `grpc-message` encoding: bytes outside 0x20–0x7E and `%` as `%XX`.
  static func percentEncoded(_ s: String) -> String {
    var out = ""
    for byte in s.utf8 {
      if byte >= 0x20, byte <= 0x7E, byte != 0x25 {
        out.append(Character(Unicode.Scalar(byte)))
      } else {
        out += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
      }
    }
    return out
  }
}
