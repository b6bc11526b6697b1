import NIOCore
import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

/// A minimal HTTP/1.1 server: `GET /small` → 2 bytes, `GET /big` → `bigBytes` bytes; one request per
/// connection (`Connection: close`), TCP_NODELAY.
final class UpstreamServer: ChannelInboundHandler, Sendable {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer
  let chunk: ByteBuffer
  let bigBytes: Int

  init(bigBytes: Int) {
    self.bigBytes = bigBytes
    chunk = ByteBuffer(repeating: 0x61, count: 1 << 20)
  }

  /// Listens on `host` (an IPv4 address), a port the kernel picks.
  static func start(group: EventLoopGroup, bigBytes: Int, host: String = "127.0.0.1") async throws -> Channel {
    let handler = UpstreamServer(bigBytes: bigBytes)
    return try await ServerBootstrap(group: group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(handler) } }
      .bind(host: host, port: 0).get()
  }

  /// CPU time (nanoseconds) the thread of `loop` has used so far (`CLOCK_THREAD_CPUTIME_ID`, read on
  /// that thread): the server's own cost of sending, next to the proxy's and the client's.
  static func cpuNanoseconds(_ loop: EventLoop) async throws -> Int64 {
    try await loop.submit {
      var ts = timespec()
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
      return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }.get()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let request = String(buffer: unwrapInboundIn(data))
    guard request.contains("\r\n\r\n") else { return }  // the client sends the head in one write
    let big = request.hasPrefix("GET /big ")
    let length = big ? bigBytes : 2
    context.write(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: \(length)\r\nConnection: close\r\n\r\n")), promise: nil)
    if big {
      for _ in 0..<(bigBytes / chunk.readableBytes) { context.write(wrapOutboundOut(chunk), promise: nil) }
    } else {
      context.write(wrapOutboundOut(ByteBuffer(string: "ok")), promise: nil)
    }
    context.writeAndFlush(wrapOutboundOut(ByteBuffer()), promise: nil)
    context.close(mode: .output, promise: nil)
  }
}
