import Foundation
import Testing

@testable import EventLog

@Suite struct SubscriptionTests {
  /// Catch-up from seq N while writers append concurrently: every seq from N to the end exactly once, in
  /// order.
  @Test func catchUpWhileWriting() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    try await log.append((0..<500).map { event(payload: "pre \($0)") })
    let writers = 4
    let perWriter = 250
    let final = UInt64(500 + writers * perWriter)
    let stream = log.subscribe(from: 200)
    let consumer = Task { () throws -> ([UInt64], Int) in
      var seqs: [UInt64] = []
      var behind = 0
      for try await ev in stream {
        switch ev {
        case .record(let r):
          seqs.append(r.seq)
          if r.seq == final { return (seqs, behind) }
        case .fellBehind: behind += 1
        }
      }
      return (seqs, behind)
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
      for w in 0..<writers {
        group.addTask {
          var i = 0
          while i < perWriter {
            let n = min(1 + i % 3, perWriter - i)
            try await log.append((0..<n).map { event(id: "w\(w)", payload: "w\(w) \(i + $0)") })
            i += n
          }
        }
      }
      try await group.waitForAll()
    }
    let (seqs, behind) = try await consumer.value
    #expect(seqs == Array(200...final))
    print("catch-up subscription: \(seqs.count) records, fellBehind \(behind) times")
  }

  /// A slow subscriber with a 4-record buffer is told it fell behind, then still gets every seq exactly
  /// once, in order.
  @Test func slowSubscriberFallsBehindAndCatchesUp() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log) { $0.subscriberBufferSize = 4 }
    defer { log.close() }
    let total: UInt64 = 300
    let stream = log.subscribe(from: 1)
    let (firstSeen, firstSeenCont) = AsyncStream<Void>.makeStream()
    let consumer = Task { () throws -> ([UInt64], [UInt64]) in
      var seqs: [UInt64] = []
      var behind: [UInt64] = []
      for try await ev in stream {
        switch ev {
        case .record(let r):
          seqs.append(r.seq)
          if r.seq == 1 { firstSeenCont.yield() }
          try await Task.sleep(nanoseconds: 2_000_000)
          if r.seq == total { return (seqs, behind) }
        case .fellBehind(let last):
          behind.append(last)
        }
      }
      return (seqs, behind)
    }
    // Let the consumer reach the live phase first (overflow while catching up from history is silent).
    try await log.append([event(payload: "e0")])
    for await _ in firstSeen { break }
    try await Task.sleep(nanoseconds: 50_000_000)
    var written: UInt64 = 1
    while written < total {
      // Batches of up to 9 events: one commit larger than the 4-record buffer overflows it for certain.
      let n = min(UInt64(1 + written % 9), total - written)
      try await log.append((0..<n).map { event(payload: "e\(written + $0)") })
      written += n
    }
    let (seqs, behind) = try await consumer.value
    #expect(!behind.isEmpty)
    #expect(seqs == Array(1...total))
    // Every fellBehind names a position the consumer had really reached.
    for b in behind { #expect(b <= total) }
    print("slow subscriber: fellBehind \(behind.count) times at \(behind.prefix(5))…")
  }

  @Test func filteredSubscriptionAndClose() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    try await log.append((0..<30).map { event(id: $0 % 3 == 0 ? "x" : "y", payload: "\($0)") })
    let stream = log.subscribe(from: 1, filter: EventFilter(aggregate: AggregateRef(kind: "thing", id: "x")))
    let consumer = Task { () throws -> [UInt64] in
      var seqs: [UInt64] = []
      for try await ev in stream { if case .record(let r) = ev { seqs.append(r.seq) } }
      return seqs  // ends when the log closes
    }
    try await log.append((30..<60).map { event(id: $0 % 3 == 0 ? "x" : "y", payload: "\($0)") })
    // Wait until the consumer has everything, then close.
    let want = Array(stride(from: UInt64(1), through: 58, by: 3))
    for _ in 0..<200 {
      if try log.records(from: 1, filter: EventFilter(aggregate: .init(kind: "thing", id: "x"))).count == want.count { break }
    }
    try await Task.sleep(nanoseconds: 200_000_000)
    log.close()
    let seqs = try await consumer.value
    #expect(seqs == want)
  }

  @Test func cancellingTheConsumerEndsTheSubscription() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    let consumer = Task { () throws -> Int in
      var n = 0
      for try await _ in log.subscribe(from: 1) { n += 1 }
      return n
    }
    try await log.append([event(), event()])
    try await Task.sleep(nanoseconds: 100_000_000)
    consumer.cancel()
    let n = try await consumer.value
    #expect(n == 2)
    try await Task.sleep(nanoseconds: 50_000_000)
    #expect(log.liveSubscriberCount == 0)
  }
}
