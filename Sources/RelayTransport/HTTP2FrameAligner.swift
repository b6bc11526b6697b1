import NIOCore
import NIOSSL

/// Hands the HTTP/2 handler its inbound bytes one whole frame per `channelRead` (issue 11: SSH tunnel
/// throughput).
///
/// Why: swift-nio-http2's frame decoder appends each read to the buffer it still parses, resetting
/// that buffer's indices only when a read ends exactly at a frame boundary. On a busy byte stream
/// that almost never happens, so the buffer's write index marches on, the buffer doubles up to tens
/// of MiB, and every copy-on-write (the DATA frames it emitted still share it) allocates that full
/// capacity again (a fresh `mmap`). Every byte received then lands on a fresh page: `perf` on a
/// 200 MiB upload showed the supervisor spending about 80 % of its time in page faults under
/// `HTTP2FrameDecoder.append` (mmap/munmap of 32 MiB + 4 KiB about 16 times a second).
///
/// With whole frames per read, every read ends on a frame boundary, so the decoder resets its
/// buffer after each frame and its buffers stay one frame large (≤ the peer's max frame size,
/// 16 KiB by default), which malloc reuses. Only the bytes of a frame split across reads are copied
/// (into a buffer of that frame's size); whole frames are passed on as slices without copying.
/// Memory held: at most one partial frame (≤ 9 + 2^24 − 1 bytes by the frame format; in practice the
/// max frame size the transport advertises).
///
/// Install it between TLS and the HTTP/2 handler: on a client connection with ``install(on:)`` (its
/// inbound bytes are frames only), on a server connection with `prefaceLength` 24 (the client's
/// connection preface, RFC 9113 §3.4, is passed on as it comes, then frames).
public final class HTTP2FrameAligner: ChannelInboundHandler, RemovableChannelHandler {
  /// Raw bytes as read from the connection (after TLS).
  public typealias InboundIn = ByteBuffer
  /// The same bytes, regrouped: the preface, then one whole HTTP/2 frame per read.
  public typealias InboundOut = ByteBuffer

  /// The 9-byte frame header (RFC 9113 §4.1): 24-bit length, type, flags, stream id.
  static let headerLength = 9

  /// The start of a frame that has not fully arrived yet (its own storage, sized to the frame).
  private var pending: ByteBuffer?
  /// Bytes of the connection preface still to pass on before the first frame.
  private var prefaceRemaining: Int

  /// - Parameter prefaceLength: bytes passed on unchanged before the first frame (24 on a server
  ///   connection: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`; 0 on a client connection).
  public init(prefaceLength: Int = 0) { prefaceRemaining = prefaceLength }

  /// The length of the HTTP/2 client connection preface (RFC 9113 §3.4).
  public static let serverPrefaceLength = 24

  /// The total size (header + payload) of the frame at `buffer`'s reader index, if its header is there.
  static func frameSize(_ buffer: ByteBuffer) -> Int? {
    guard buffer.readableBytes >= headerLength,
      let high = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
      let low = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt16.self)
    else { return nil }
    return headerLength + (Int(high) << 16 | Int(low))
  }

  /// Passes on the preface, then every whole frame in `data` as a slice; keeps a trailing partial frame
  /// in its own buffer until the rest arrives.
  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var incoming = unwrapInboundIn(data)
    if prefaceRemaining > 0 {
      let n = min(prefaceRemaining, incoming.readableBytes)
      prefaceRemaining -= n
      context.fireChannelRead(wrapInboundOut(incoming.readSlice(length: n)!))
      if incoming.readableBytes == 0 { return }
    }
    if var partial = pending {
      // Complete the header first (it says how long the frame is), then the frame.
      if partial.readableBytes < Self.headerLength {
        let take = min(Self.headerLength - partial.readableBytes, incoming.readableBytes)
        var head = incoming.readSlice(length: take)!
        partial.writeBuffer(&head)
      }
      guard let size = Self.frameSize(partial) else {
        pending = partial
        return
      }
      let take = min(size - partial.readableBytes, incoming.readableBytes)
      var rest = incoming.readSlice(length: take)!
      partial.writeBuffer(&rest)
      guard partial.readableBytes == size else {
        pending = partial
        return
      }
      pending = nil
      context.fireChannelRead(wrapInboundOut(partial))
    }
    while let size = Self.frameSize(incoming), incoming.readableBytes >= size {
      context.fireChannelRead(wrapInboundOut(incoming.readSlice(length: size)!))
    }
    if incoming.readableBytes > 0 {
      // Own storage for the partial frame: a slice would keep the whole read buffer alive and make
      // the next append copy all of it.
      var partial = context.channel.allocator.buffer(capacity: max(Self.frameSize(incoming) ?? 0, 16_384 + Self.headerLength))
      partial.writeBuffer(&incoming)
      pending = partial
    }
  }

  /// Passes on a partial frame still held (the HTTP/2 handler sees the truncated bytes), then the inactive
  /// event.
  public func channelInactive(context: ChannelHandlerContext) {
    // A connection that ends mid-frame: the HTTP/2 handler sees the same bytes it would have seen.
    if let partial = pending {
      pending = nil
      context.fireChannelRead(wrapInboundOut(partial))
    }
    context.fireChannelInactive()
  }

  /// Passes on a partial frame still held, so removing the handler loses no bytes.
  public func handlerRemoved(context: ChannelHandlerContext) {
    if let partial = pending {
      pending = nil
      context.fireChannelRead(wrapInboundOut(partial))
    }
  }

  /// Adds an aligner right after the connection's TLS handler (first in the pipeline when there is
  /// none, i.e. plaintext), which is right before the HTTP/2 handler in grpc-swift-nio-transport's
  /// client pipeline. For `HTTP2ClientTransport.Posix.Config.channelDebuggingCallbacks.onCreateTCPConnection`,
  /// which runs once that pipeline is configured.
  public static func install(on channel: any Channel) -> EventLoopFuture<Void> {
    channel.eventLoop.makeCompletedFuture {
      let ops = channel.pipeline.syncOperations
      if let tls = try? ops.handler(type: NIOSSLClientHandler.self) {
        try ops.addHandler(HTTP2FrameAligner(), position: .after(tls))
      } else {
        try ops.addHandler(HTTP2FrameAligner(), position: .first)
      }
    }
  }
}
