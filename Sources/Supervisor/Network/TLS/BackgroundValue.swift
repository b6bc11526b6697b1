import Foundation

/// A value computed once on a thread of its own, started at init; reading ``value`` waits for it.
///
/// For start-up work that the sandbox rarely needs at once (issue 14, CreateSandbox → READY): the
/// proxy's upstream TLS context loads and parses the system's ~140 root certificates (5–10 ms), which only
/// an inspected connection uses, and no connection is allowed before a policy loads, after READY.
final class BackgroundValue<T: Sendable>: @unchecked Sendable {
  private let condition = NSCondition()
  private var result: T?

  /// Starts `make` on a new thread.
  init(_ make: @escaping @Sendable () -> T) {
    Thread.detachNewThread { [self] in
      let made = make()
      condition.lock()
      result = made
      condition.broadcast()
      condition.unlock()
    }
  }

  /// The value; blocks the calling thread until it is made (once, at most the making's time).
  var value: T {
    condition.lock()
    defer { condition.unlock() }
    while result == nil { condition.wait() }
    return result!
  }
}
