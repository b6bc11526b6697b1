import Synchronization

/// Runs operations one after another per key (different keys run concurrently); the local driver's
/// per-sandbox serialisation of reconcile, stop and start.
///
/// A key's entry lives only while work for it is queued or running: the last operation of a key
/// removes it, so a gateway that created and deleted thousands of sandboxes keeps no entry (and no
/// completed task) per sandbox id (issue 17, memory growth under churn).
final class KeyedSerialQueue: Sendable {
  private struct Tail {
    var serial: UInt64
    var task: Task<Void, Never>
  }

  private struct State {
    var tails: [String: Tail] = [:]
    var nextSerial: UInt64 = 0
  }

  private let state = Mutex(State())

  /// Runs `body` after every operation enqueued before for `key` has finished.
  func enqueue(_ key: String, _ body: @escaping @Sendable () async -> Void) {
    state.withLock { s in
      let previous = s.tails[key]?.task
      s.nextSerial += 1
      let serial = s.nextSerial
      let task = Task {
        await previous?.value
        await body()
        self.finished(key, serial)
      }
      s.tails[key] = Tail(serial: serial, task: task)
    }
  }

  /// Removes the key's entry when the operation that just finished was its last one.
  private func finished(_ key: String, _ serial: UInt64) {
    state.withLock { s in
      if s.tails[key]?.serial == serial { s.tails[key] = nil }
    }
  }

  /// Keys with queued or running work (tests: returns to 0 once everything ran).
  var activeKeys: Int { state.withLock { $0.tails.count } }

  /// Waits until no key has queued or running work, or `timeout` has passed (polled every 20 ms).
  /// Returns the number of keys still busy (0 when everything finished).
  func drain(timeout: Duration) async -> Int {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while activeKeys > 0, ContinuousClock.now < deadline {
      try? await Task.sleep(for: .milliseconds(20))
    }
    return activeKeys
  }
}
