import Foundation
import SandboxProtocol
import Synchronization
import Testing

/// The windowed report both supervisor reporters (denials, credential substitutions) are built on: one report
/// per window an interval after its first entry, bounded keys with an overflow key, undelivered entries merged
/// back (issue 12).
@Suite struct WindowedReportTests {
  struct Entry: Sendable, Equatable {
    var count: Int
    var first: Int
    var last: Int
  }

  static func report(maxEntries: Int = 10, overflow: @escaping @Sendable (String) -> String? = { _ in nil }) -> WindowedReport<String, Entry> {
    WindowedReport<String, Entry>(interval: .milliseconds(300), maxEntries: maxEntries, overflow: overflow) { cur, e in
      cur.count += e.count
      cur.first = min(cur.first, e.first)
      cur.last = max(cur.last, e.last)
    }
  }

  static func count(_ r: WindowedReport<String, Entry>, _ key: String, at t: Int) {
    r.record(key) { e in
      if e == nil { e = Entry(count: 0, first: t, last: t) }
      e?.count += 1
      e?.last = t
    }
  }

  @Test func aWindowIsOneReportAnIntervalAfterItsFirstEntry() async throws {
    let r = Self.report()
    let sent = Mutex<[(ContinuousClock.Instant, [String: Entry])]>([])
    let runner = Task { await r.run { batch in sent.withLock { $0.append((.now, batch)) } } }
    defer { runner.cancel() }
    try await Task.sleep(for: .milliseconds(100))
    #expect(sent.withLock { $0.isEmpty }, "nothing to report: no report")
    let opened = ContinuousClock.now
    for t in 1...5 { Self.count(r, "a", at: t) }
    Self.count(r, "b", at: 6)
    try await Task.sleep(for: .milliseconds(150))
    #expect(sent.withLock { $0.isEmpty }, "not before the interval")
    let deadline = ContinuousClock.now + .seconds(5)  // a loaded machine may run the timer late
    while sent.withLock({ $0.isEmpty }) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    try await Task.sleep(for: .milliseconds(100))
    let reports = sent.withLock { $0 }
    #expect(reports.count == 1, "\(reports)")
    #expect(reports.first?.1 == ["a": Entry(count: 5, first: 1, last: 5), "b": Entry(count: 1, first: 6, last: 6)])
    if let at = reports.first?.0 { #expect(at - opened >= .milliseconds(300), "\(at - opened)") }
    #expect(r.isEmpty)
  }

  @Test func keysBeyondTheLimitGoToTheirOverflowKeyOrNowhere() async throws {
    let counted = Self.report(maxEntries: 2, overflow: { "other:" + $0.prefix(1) })
    for (i, key) in ["a1", "b1", "a2", "a3", "b2", "a1"].enumerated() { Self.count(counted, key, at: i) }
    let batch = Mutex<[String: Entry]>([:])
    #expect(await counted.flush { b in batch.withLock { $0 = b } } == nil)
    #expect(
      batch.withLock { $0 }
        == [
          "a1": Entry(count: 2, first: 0, last: 5), "b1": Entry(count: 1, first: 1, last: 1),
          "other:a": Entry(count: 2, first: 2, last: 3), "other:b": Entry(count: 1, first: 4, last: 4),
        ])
    let dropped = Self.report(maxEntries: 2)
    for (i, key) in ["a", "b", "c", "a"].enumerated() { Self.count(dropped, key, at: i) }
    #expect(await dropped.flush { b in batch.withLock { $0 = b } } == nil)
    #expect(batch.withLock { $0 } == ["a": Entry(count: 2, first: 0, last: 3), "b": Entry(count: 1, first: 1, last: 1)])
  }

  @Test func anUndeliveredReportIsMergedBackAndSentWithTheNextOne() async throws {
    struct Down: Error {}
    let r = Self.report()
    Self.count(r, "a", at: 10)
    Self.count(r, "a", at: 11)
    #expect(await r.flush { _ in throw Down() } is Down)
    #expect(!r.isEmpty, "kept for the next attempt")
    Self.count(r, "a", at: 20)
    Self.count(r, "b", at: 21)
    let batch = Mutex<[String: Entry]>([:])
    #expect(await r.flush { b in batch.withLock { $0 = b } } == nil)
    #expect(batch.withLock { $0 } == ["a": Entry(count: 3, first: 10, last: 20), "b": Entry(count: 1, first: 21, last: 21)])
    #expect(r.isEmpty)
    // The periodic loop retries an undelivered window an interval later, without a new entry.
    let attempts = Mutex(0)
    let delivered = Mutex<[String: Entry]>([:])
    let runner = Task {
      await r.run { b in
        let n = attempts.withLock { n -> Int in
          n += 1
          return n
        }
        if n == 1 { throw Down() }
        delivered.withLock { $0 = b }
      }
    }
    defer { runner.cancel() }
    Self.count(r, "c", at: 30)
    let deadline = ContinuousClock.now + .seconds(5)
    while attempts.withLock({ $0 }) < 2 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    #expect(attempts.withLock { $0 } == 2 && delivered.withLock { $0 } == ["c": Entry(count: 1, first: 30, last: 30)])
  }
}
