import NIOCore

/// Credential placeholders in WebSocket messages (upstream `websocket_credential_rewrite`, docs
/// `policy-schema.mdx`: "rewrites credential placeholders in client-to-server WebSocket text messages
/// after an allowed HTTP 101 upgrade"): sits on the client side of the byte relay after the switch and
/// parses the client's frames (RFC 6455 §5.2). In a text frame (or a continuation of a text message)
/// of at most ``maxFrameBytes``, every placeholder becomes the current value and the frame is re-masked
/// with its own key and re-framed with its new length; every other frame passes unchanged. A
/// placeholder without a value closes the connection (fail closed). The upgrade request carries no
/// `Sec-WebSocket-Extensions` then, so frames are never compressed. Limits: a placeholder split across
/// two fragments, or in a frame over ``maxFrameBytes``, stays a placeholder.
struct WebSocketCredentialRewriter: ByteToMessageDecoder {
  typealias InboundOut = ByteBuffer

  /// The largest frame payload parsed for placeholders (larger frames pass unchanged).
  static let maxFrameBytes = 1 << 20

  /// The current provider values (read per frame, so a rotation applies to the next message).
  let values: @Sendable () -> [String: String]
  /// Told the keys of every frame that left with values in place of placeholders (the audit's count).
  let onSubstituted: @Sendable (Set<String>) -> Void
  private var inText = false
  /// Bytes of an oversized frame still to pass unchanged.
  private var passing = 0

  init(values: @escaping @Sendable () -> [String: String], onSubstituted: @escaping @Sendable (Set<String>) -> Void) {
    self.values = values
    self.onSubstituted = onSubstituted
  }

  struct Unresolved: Error {}

  mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
    if passing > 0 {
      let n = min(passing, buffer.readableBytes)
      guard n > 0, let slice = buffer.readSlice(length: n) else { return .needMoreData }
      passing -= n
      context.fireChannelRead(wrapInboundOut(slice))
      return .continue
    }
    let start = buffer.readerIndex
    guard let b0 = buffer.getInteger(at: start, as: UInt8.self), let b1 = buffer.getInteger(at: start + 1, as: UInt8.self) else { return .needMoreData }
    var headerLength = 2
    var length = Int(b1 & 0x7f)
    if length == 126 {
      guard let l = buffer.getInteger(at: start + 2, as: UInt16.self) else { return .needMoreData }
      length = Int(l)
      headerLength += 2
    } else if length == 127 {
      guard let l = buffer.getInteger(at: start + 2, as: UInt64.self) else { return .needMoreData }
      guard l <= UInt64(Int.max / 2) else { throw Unresolved() }
      length = Int(l)
      headerLength += 8
    }
    let masked = b1 & 0x80 != 0
    if masked { headerLength += 4 }
    let opcode = b0 & 0x0f
    let fin = b0 & 0x80 != 0
    // Whether this frame carries text (a text frame, or a continuation of a text message); the message
    // state moves on only once the frame is consumed (decode is called again for an incomplete one).
    let text = opcode == 1 || (opcode == 0 && inText)
    let nextInText = opcode == 1 || opcode == 2 ? (opcode == 1 && !fin) : opcode == 0 ? (inText && !fin) : inText
    guard text, masked, b0 & 0x70 == 0, length <= Self.maxFrameBytes else {
      // Not rewritten: the header now, the payload as it comes.
      guard buffer.readableBytes >= headerLength, let header = buffer.readSlice(length: headerLength) else { return .needMoreData }
      inText = nextInText
      passing = length
      context.fireChannelRead(wrapInboundOut(header))
      return .continue
    }
    guard buffer.readableBytes >= headerLength + length else { return .needMoreData }
    let mask = buffer.getBytes(at: start + headerLength - 4, length: 4)!
    var payload = buffer.getBytes(at: start + headerLength, length: length)!
    for i in payload.indices { payload[i] ^= mask[i & 3] }
    buffer.moveReaderIndex(forwardBy: headerLength + length)
    inText = nextInText
    var out = payload
    var keys = Set<String>()
    if BodyCredentials.containsMarker(payload[...]), let text = String(validating: payload, as: UTF8.self) {
      do {
        let (resolved, used) = try CredentialPlaceholders.resolve(text, values())
        out = Array(resolved.utf8)
        keys = used
      } catch { throw Unresolved() }
    }
    for i in out.indices { out[i] ^= mask[i & 3] }
    var frame = context.channel.allocator.buffer(capacity: out.count + 14)
    frame.writeInteger(b0)
    if out.count < 126 {
      frame.writeInteger(UInt8(0x80 | out.count))
    } else if out.count <= 0xffff {
      frame.writeInteger(UInt8(0x80 | 126))
      frame.writeInteger(UInt16(out.count))
    } else {
      frame.writeInteger(UInt8(0x80 | 127))
      frame.writeInteger(UInt64(out.count))
    }
    frame.writeBytes(mask)
    frame.writeBytes(out)
    context.fireChannelRead(wrapInboundOut(frame))
    if !keys.isEmpty { onSubstituted(keys) }
    return .continue
  }

  mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
    while try decode(context: context, buffer: &buffer) == .continue {}
    if buffer.readableBytes > 0, let rest = buffer.readSlice(length: buffer.readableBytes) { context.fireChannelRead(wrapInboundOut(rest)) }
    return .needMoreData
  }
}
