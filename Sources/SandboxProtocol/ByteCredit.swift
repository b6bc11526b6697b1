import Synchronization

/// A bound on the bytes buffered between two tasks of a relay (issue 11: a tunnel must not buffer a
/// fast sender's whole stream in the gateway's memory). The producer `acquire`s the bytes it hands
/// over and waits while more than ``limit`` are outstanding; the consumer `release`s them once it has
/// written them on. A single item larger than the limit is let through when nothing else is
/// outstanding, so progress never stops. `close()` wakes every waiter (the relay ended).
public final class ByteCredit: Sendable {
  /// Most bytes outstanding (acquired, not yet released) before ``acquire`` waits.
  public let limit: Int
  private struct State {
    var outstanding = 0
    var closed = false
    var waiters: [(Int, CheckedContinuation<Void, Never>)] = []
  }
  private let state = Mutex(State())

  /// - Parameter limit: bytes that may be outstanding (default 4 MiB).
  public init(limit: Int = 4 << 20) { self.limit = limit }

  /// Waits until `n` more bytes fit (or the credit is closed), then counts them.
  public func acquire(_ n: Int) async {
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
      let ready = state.withLock { s -> Bool in
        if s.closed || s.outstanding == 0 || s.outstanding + n <= limit {
          s.outstanding += n
          return true
        }
        s.waiters.append((n, c))
        return false
      }
      if ready { c.resume() }
    }
  }

  /// Counts `n` bytes as delivered and wakes the waiters that now fit.
  public func release(_ n: Int) {
    let wake = state.withLock { s -> [CheckedContinuation<Void, Never>] in
      s.outstanding = max(0, s.outstanding - n)
      var out: [CheckedContinuation<Void, Never>] = []
      while let (m, c) = s.waiters.first, s.outstanding == 0 || s.outstanding + m <= limit {
        s.waiters.removeFirst()
        s.outstanding += m
        out.append(c)
      }
      return out
    }
    for c in wake { c.resume() }
  }

  /// Ends the bound: current and future waiters proceed at once.
  public func close() {
    let wake = state.withLock { s -> [CheckedContinuation<Void, Never>] in
      s.closed = true
      defer { s.waiters = [] }
      return s.waiters.map(\.1)
    }
    for c in wake { c.resume() }
  }
}
