#if canImport(Glibc)
  import Glibc
#endif

/// A mutex and condition variable like `NSCondition`, whose timed wait counts on `CLOCK_MONOTONIC`.
///
/// `NSCondition.wait(until: Date)` waits until a wall-clock time: when the clock is set back (NTP step,
/// `date -s`) while the writer gathers a group, a wait meant for a fraction of a millisecond lasts as long
/// as the jump, and every append behind it with it. Here the condition variable is made with
/// `pthread_condattr_setclock(CLOCK_MONOTONIC)`, and deadlines are monotonic nanoseconds (``monotonicNs()``),
/// which no clock setting moves.
final class MonotonicCondition: @unchecked Sendable {
  private let mutex: UnsafeMutablePointer<pthread_mutex_t>
  private let cond: UnsafeMutablePointer<pthread_cond_t>

  init() {
    mutex = .allocate(capacity: 1)
    cond = .allocate(capacity: 1)
    pthread_mutex_init(mutex, nil)
    var attr = pthread_condattr_t()
    pthread_condattr_init(&attr)
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
    pthread_cond_init(cond, &attr)
    pthread_condattr_destroy(&attr)
  }

  deinit {
    pthread_cond_destroy(cond)
    pthread_mutex_destroy(mutex)
    cond.deallocate()
    mutex.deallocate()
  }

  /// Takes the mutex.
  func lock() { pthread_mutex_lock(mutex) }
  /// Releases the mutex.
  func unlock() { pthread_mutex_unlock(mutex) }
  /// Wakes one waiter (call with the lock held).
  func signal() { pthread_cond_signal(cond) }
  /// Wakes every waiter (call with the lock held).
  func broadcast() { pthread_cond_broadcast(cond) }
  /// Waits for a signal (call with the lock held; returns with it held; may wake spuriously).
  func wait() { pthread_cond_wait(cond, mutex) }

  /// Waits for a signal until `deadlineNs` on the monotonic clock (``monotonicNs()``), with the lock held.
  /// - Returns: false when the deadline passed, true when woken (possibly spuriously): as `NSCondition.wait(until:)`.
  func wait(untilMonotonicNs deadlineNs: UInt64) -> Bool {
    var ts = timespec(tv_sec: Int(deadlineNs / 1_000_000_000), tv_nsec: Int(deadlineNs % 1_000_000_000))
    return pthread_cond_timedwait(cond, mutex, &ts) != ETIMEDOUT
  }
}
