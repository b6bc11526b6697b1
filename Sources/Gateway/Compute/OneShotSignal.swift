/// A signal that fires once, for one waiter that waits at most a given time (``SupervisorHub``: a
/// session's `supervisor.connected` audit waits until the driver has recorded READY).
final class OneShotSignal: Sendable {
  private let stream: AsyncStream<Never>
  private let continuation: AsyncStream<Never>.Continuation

  init() { (stream, continuation) = AsyncStream.makeStream() }

  /// Fires the signal (idempotent; a wait that starts afterwards returns at once).
  func fire() { continuation.finish() }

  /// Returns once the signal fired or `timeout` passed, whichever comes first. One waiter only.
  func wait(timeout: Duration) async {
    await withTaskGroup(of: Void.self) { group in
      group.addTask { for await _ in self.stream {} }
      group.addTask { try? await Task.sleep(for: timeout) }
      await group.next()
      group.cancelAll()
    }
  }
}
