import Synchronization
import Testing

@testable import Gateway

/// The local driver's per-sandbox queue: serial per key, concurrent across keys, and no entry left per
/// key once its work ran (issue 17: an entry per sandbox id ever seen was kept forever).
@Suite struct KeyedSerialQueueTests {
  @Test func serialPerKeyAndNothingKeptAfterwards() async throws {
    let queue = KeyedSerialQueue()
    let log = Mutex<[String: [Int]]>([:])
    for i in 0..<200 {
      let key = "sandbox-\(i % 50)"
      queue.enqueue(key) {
        if i % 7 == 0 { try? await Task.sleep(for: .milliseconds(2)) }
        log.withLock { $0[key, default: []].append(i) }
      }
    }
    #expect(queue.activeKeys > 0)
    let deadline = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < deadline, queue.activeKeys > 0 { try await Task.sleep(for: .milliseconds(10)) }
    #expect(queue.activeKeys == 0)
    let seen = log.withLock { $0 }
    #expect(seen.count == 50)
    for (key, order) in seen {
      #expect(order == order.sorted() && order.count == 4, "\(key): \(order)")
    }
  }
}
