import Foundation

/// A value computed once on a thread of its own; reading ``value`` waits for it.
///
/// For start-up work that the sandbox rarely needs at once (issue 14, CreateSandbox → READY): the
/// proxy's upstream TLS context loads and parses the system's ~140 root certificates (5–10 ms), which only
/// an inspected connection uses, and no connection is allowed before a policy loads, after READY. Such a
/// value is made with `startNow: false` and started once the sandbox is READY (``start()``), so that it does
/// not take CPU from the path to READY on a busy machine; a read before that starts it at once.
final class BackgroundValue<T: Sendable>: @unchecked Sendable {
  private let condition = NSCondition()
  private var result: T?
  private var started = false
  private let make: @Sendable () -> T

  /// - Parameters:
  ///   - startNow: start `make` on a new thread now (true) or at the first ``start()`` or ``value`` (false).
  ///   - make: computes the value (once).
  init(startNow: Bool = true, _ make: @escaping @Sendable () -> T) {
    self.make = make
    if startNow { start() }
  }

  /// Starts the making on a new thread unless it has started; returns at once.
  func start() {
    condition.lock()
    let first = !started
    started = true
    condition.unlock()
    guard first else { return }
    Thread.detachNewThread { [self] in
      let made = make()
      condition.lock()
      result = made
      condition.broadcast()
      condition.unlock()
    }
  }

  /// The value; starts the making if it has not started and blocks the calling thread until it is made
  /// (once, at most the making's time).
  var value: T {
    start()
    condition.lock()
    defer { condition.unlock() }
    while result == nil { condition.wait() }
    return result!
  }
}
