import Foundation
import Synchronization
import Testing

@testable import EventLog

/// The writer's condition (``MonotonicCondition``): its timed wait, which bounds a group's gathering, counts on
/// `CLOCK_MONOTONIC` and not on the wall clock (which `NSCondition.wait(until:)` follows).
@Suite struct MonotonicConditionTests {
  @Test func timedWaitEndsAtAMonotonicDeadline() {
    let c = MonotonicCondition()
    c.lock()
    defer { c.unlock() }
    // A deadline in monotonic nanoseconds: a condition on CLOCK_REALTIME would take it for a moment decades
    // ago and return at once; a deadline on the wall clock's scale would never come.
    let start = monotonicNs()
    var woken = true
    while woken && monotonicNs() < start + 50_000_000 { woken = c.wait(untilMonotonicNs: start + 50_000_000) }
    let waited = monotonicNs() - start
    #expect(!woken)
    #expect(waited >= 50_000_000 && waited < 2_000_000_000, "waited \(waited) ns")
    // A deadline already passed returns at once.
    let before = monotonicNs()
    #expect(!c.wait(untilMonotonicNs: before - 1))
    #expect(monotonicNs() - before < 500_000_000)
  }

  @Test func signalWakesATimedWait() async {
    let c = MonotonicCondition()
    let flag = Flag()
    let waiter = Thread {
      c.lock()
      let deadline = monotonicNs() + 10_000_000_000
      var timedOut = false
      while !flag.set.load(ordering: .relaxed) && !timedOut { timedOut = !c.wait(untilMonotonicNs: deadline) }
      c.unlock()
      flag.woken.store(timedOut ? -1 : Int64(monotonicNs()), ordering: .releasing)
    }
    waiter.start()
    try? await Task.sleep(for: .milliseconds(50))
    let sent = monotonicNs()
    c.lock()
    flag.set.store(true, ordering: .relaxed)
    c.signal()
    c.unlock()
    while flag.woken.load(ordering: .acquiring) == 0 { try? await Task.sleep(for: .milliseconds(5)) }
    let woken = flag.woken.load(ordering: .acquiring)
    #expect(woken > 0 && UInt64(woken) - sent < 2_000_000_000, "\(woken)")
  }

  /// State shared with the waiting thread: whether it was signalled, and when it woke (-1: timed out).
  final class Flag: Sendable {
    let set = Atomic<Bool>(false)
    let woken = Atomic<Int64>(0)
  }
}
