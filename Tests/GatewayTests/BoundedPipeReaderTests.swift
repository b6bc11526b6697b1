import Foundation
import SandboxProtocol
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// ``BoundedPipeReader`` (the SSH proxy's stdin and the supervisor's relay reads, issues 11 and 16): a
/// consumer that does not keep up stops the reader after `depth` chunks, so the producer blocks on the
/// full pipe instead of the reader buffering without limit.
@Suite("BoundedPipeReader")
struct BoundedPipeReaderTests {
  @Test("reads at most depth chunks ahead of the consumer, then everything once consumed, in order")
  func bounded() async throws {
    var fds: [Int32] = [0, 0]
    #expect(pipe(&fds) == 0)
    let (readEnd, writeEnd) = (fds[0], fds[1])
    let chunk = 4096
    let total = 64 * chunk * 16  // 4 MiB, far more than depth × chunk + the pipe's 64 KiB
    let written = Counter()
    let writer = Thread {
      var block = [UInt8](repeating: 0, count: chunk)
      var sent = 0
      while sent < total {
        for i in 0..<chunk { block[i] = UInt8(truncatingIfNeeded: (sent + i) % 251) }
        let n = block.withUnsafeBytes { write(writeEnd, $0.baseAddress, chunk) }
        if n <= 0 { break }
        sent += n
        for _ in 0..<(n / chunk) { written.add() }
      }
      close(writeEnd)
    }
    writer.start()
    let reader = BoundedPipeReader(fd: readEnd, chunkSize: chunk, depth: 4)
    try await Task.sleep(for: .milliseconds(500))
    // Not consumed yet: ≤ 4 chunks taken out of the pipe, plus what the pipe itself holds (64 KiB).
    let ahead = written.value
    #expect(ahead <= 4 + 65536 / chunk + 1, "the writer got \(ahead) chunks in while nothing was consumed")
    #expect(ahead >= 4, "\(ahead)")
    var received = 0
    var inOrder = true
    for await data in reader.chunks {
      for (i, b) in data.enumerated() where b != UInt8(truncatingIfNeeded: (received + i) % 251) { inOrder = false }
      received += data.count
      reader.consumed()
    }
    #expect(received == total)
    #expect(inOrder)
  }
}
