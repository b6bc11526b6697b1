import NIOCore
import NIOEmbedded
import Testing

@testable import RelayTransport

/// The HTTP/2 frame aligner in front of the client transports' HTTP/2 handler (issue 11 throughput):
/// whatever the read boundaries, it passes on exactly the bytes it received, one whole frame per read,
/// and a frame split across reads ends up in a buffer of its own size.
@Suite("HTTP2FrameAligner")
struct HTTP2FrameAlignerTests {
  /// A frame: 24-bit length, type, flags, 31-bit stream id, payload bytes `fill`.
  static func frame(length: Int, fill: UInt8) -> [UInt8] {
    [UInt8(length >> 16), UInt8((length >> 8) & 0xff), UInt8(length & 0xff), 0x0, 0x0, 0, 0, 0, 1] + [UInt8](repeating: fill, count: length)
  }

  @Test("random read boundaries: every read passed on is one whole frame, in order, bytes unchanged")
  func randomSplits() throws {
    let lengths = [0, 1, 8, 9, 100, 16_384, 16_384, 5, 16_384, 70_000, 3, 16_384, 0, 12]
    let frames = lengths.enumerated().map { Self.frame(length: $0.element, fill: UInt8($0.offset)) }
    let stream = frames.flatMap { $0 }
    var generator = SystemRandomNumberGenerator()
    for round in 0..<50 {
      let channel = EmbeddedChannel(handler: HTTP2FrameAligner())
      var offset = 0
      while offset < stream.count {
        // Reads of 1 byte up to 40 KiB, and now and then everything left.
        let size = round % 10 == 0 ? stream.count : Int.random(in: 1...40_000, using: &generator)
        let end = min(stream.count, offset + size)
        try channel.writeInbound(ByteBuffer(bytes: stream[offset..<end]))
        offset = end
      }
      var received: [[UInt8]] = []
      while let b = try channel.readInbound(as: ByteBuffer.self) { received.append(Array(b.readableBytesView)) }
      #expect(received == frames, "round \(round)")
      #expect(try channel.finish().isClean)
    }
  }

  @Test("server side: the 24-byte connection preface is passed on first (however it is split), then whole frames")
  func prefaceThenFrames() throws {
    let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    let frames = [Self.frame(length: 6, fill: 1), Self.frame(length: 16_384, fill: 2), Self.frame(length: 0, fill: 3)]
    let stream = preface + frames.flatMap { $0 }
    for cut in [1, 10, 24, 25, 33, 40, 5000] {
      let channel = EmbeddedChannel(handler: HTTP2FrameAligner(prefaceLength: HTTP2FrameAligner.serverPrefaceLength))
      try channel.writeInbound(ByteBuffer(bytes: stream[0..<cut]))
      try channel.writeInbound(ByteBuffer(bytes: stream[cut...]))
      var received: [[UInt8]] = []
      while let b = try channel.readInbound(as: ByteBuffer.self) { received.append(Array(b.readableBytesView)) }
      // The preface arrives in one or two pieces (as cut), never mixed with frame bytes.
      let prefaceParts = cut < 24 ? 2 : 1
      #expect(received.prefix(prefaceParts).flatMap { $0 } == preface, "cut \(cut)")
      #expect(Array(received.dropFirst(prefaceParts)) == frames, "cut \(cut)")
    }
  }

  @Test("a frame split across reads gets its own buffer, sized to the frame, not to the read")
  func splitFrameOwnStorage() throws {
    let channel = EmbeddedChannel(handler: HTTP2FrameAligner())
    let a = Self.frame(length: 16_384, fill: 1)
    let b = Self.frame(length: 16_384, fill: 2)
    // One large read holding frame a and the first 100 bytes of b, then the rest of b.
    var big = ByteBuffer()
    big.reserveCapacity(1 << 20)
    big.writeBytes(a + b[0..<100])
    try channel.writeInbound(big)
    try channel.writeInbound(ByteBuffer(bytes: b[100...]))
    let first = try #require(try channel.readInbound(as: ByteBuffer.self))
    let second = try #require(try channel.readInbound(as: ByteBuffer.self))
    #expect(Array(first.readableBytesView) == a)
    #expect(Array(second.readableBytesView) == b)
    #expect(second.capacity < 64 << 10, "the split frame's buffer is \(second.capacity) bytes")
    #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
  }

  @Test("bytes of an unfinished frame are passed on when the connection ends")
  func partialAtClose() throws {
    let channel = EmbeddedChannel(handler: HTTP2FrameAligner())
    let a = Self.frame(length: 50, fill: 7)
    try channel.writeInbound(ByteBuffer(bytes: a[0..<20]))
    #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
    channel.pipeline.fireChannelInactive()
    let rest = try #require(try channel.readInbound(as: ByteBuffer.self))
    #expect(Array(rest.readableBytesView) == Array(a[0..<20]))
  }
}
