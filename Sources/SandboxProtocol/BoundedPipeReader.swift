import Dispatch
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Reads a pipe or socket on its own thread, at most `depth` chunks (default 16 × 64 KiB = 1 MiB) ahead
/// of the consumer, which calls ``consumed()`` after handling each chunk: the bounded alternative to
/// ``readChunks(_:chunkSize:)`` for byte streams whose consumer can be slower than the producer (relay
/// channels, the SSH proxy's stdin). Closes the descriptor at end of file.
public final class BoundedPipeReader: Sendable {
  /// The chunks read, in order (at most `depth` of them waiting).
  public let chunks: AsyncStream<Data>
  /// Created at 0 and signalled 16 times: libdispatch traps when a semaphore is released while its
  /// value is below the value it was created with, which a reader abandoned mid-stream would be.
  private let slots = DispatchSemaphore(value: 0)

  /// - Parameters: fd: the descriptor (closed at end of file); chunkSize: bytes per read; depth:
  ///   chunks read ahead of the consumer (memory bound: `depth` × `chunkSize`); resizePipe: with a
  ///   chunk over 64 KiB, grow a pipe's kernel buffer to one chunk (≤ 1 MiB) so reads return whole chunks.
  public init(fd: Int32, chunkSize: Int = 65536, depth: Int = 16, resizePipe: Bool = true) {
    for _ in 0..<depth { slots.signal() }
    // A pipe as large as one chunk (best effort; sockets and other descriptors refuse): a bulk writer
    // then fills whole chunks, so a stream moves in fewer, larger relay messages.
    if resizePipe, chunkSize > 65536 { _ = fcntl(fd, Self.pipeSizeCommand, Int32(min(chunkSize, 1 << 20))) }
    let (stream, continuation) = AsyncStream<Data>.makeStream()
    chunks = stream
    let slots = self.slots
    // Once nobody reads the stream any more, the thread reads (and drops) until end of file unthrottled.
    let abandoned = SharedFlag()
    continuation.onTermination = { _ in
      abandoned.set()
      slots.signal()
    }
    Thread.detachNewThread {
      var buffer = [UInt8](repeating: 0, count: chunkSize)
      while true {
        if !abandoned.isSet { slots.wait() }
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, chunkSize) }
        if n > 0 {
          continuation.yield(Data(buffer[0..<n]))
        } else if n < 0 && errno == EINTR {
          slots.signal()
          continue
        } else {
          break
        }
      }
      Glibc.close(fd)
      continuation.finish()
    }
  }

  /// Called after each chunk is handled: lets the reader read one more.
  public func consumed() { slots.signal() }

  /// Linux's `F_SETPIPE_SZ` (fcntl.h, `_GNU_SOURCE`; not exported to Swift): resizes a pipe's buffer.
  public static let pipeSizeCommand: Int32 = 1031
}
