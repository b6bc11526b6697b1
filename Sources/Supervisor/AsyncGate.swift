import Foundation

/// A one-way gate tasks wait at until it opens (once, for good).
///
/// The supervisor's first session waits here before it says hello: its connection to the gateway (TCP,
/// TLS, HTTP/2) is made while the network enforcement starts, but the gateway learns of the supervisor
/// (and marks the sandbox READY) only once the proxy listens (issue 14, CreateSandbox → READY).
final class AsyncGate: @unchecked Sendable {
  private let lock = NSLock()
  private var isOpen = false
  private var waiters: [CheckedContinuation<Void, Never>] = []

  /// Opens the gate: every waiter resumes, later waits return at once.
  func open() {
    let resumed: [CheckedContinuation<Void, Never>] = lock.withLock {
      isOpen = true
      defer { waiters = [] }
      return waiters
    }
    for waiter in resumed { waiter.resume() }
  }

  /// Returns once the gate is open.
  func wait() async {
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
      let now: Bool = lock.withLock {
        if isOpen { return true }
        waiters.append(c)
        return false
      }
      if now { c.resume() }
    }
  }
}
