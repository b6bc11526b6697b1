import Foundation
import Synchronization

/// The shape both reporters of the supervisor's proxy share (`DenialReporter`, `SubstitutionReporter`; issue 12 and
/// enforcement-and-ssh.md §1.4 "Audit inside the sandbox"): events are counted under a key in a window; the
/// window is sent as one report ``interval`` after it opened (its first entry), and at once when the
/// supervisor stops; a report that is not delivered is merged back and tried again one interval later.
///
/// Bounded: at most ``maxEntries`` keys are pending. An entry for a further key goes to the key ``overflow``
/// names for it (e.g. a per-credential "other destinations" entry), or is dropped when it names none.
/// Reports are sent one at a time (the periodic one and the one at stop never overlap).
public final class WindowedReport<Key: Hashable & Sendable, Entry: Sendable>: Sendable {
  /// Time from the first entry of a window to its report, and between retries.
  public let interval: Duration
  /// Pending keys at most (overflow keys come on top).
  public let maxEntries: Int
  private let overflow: @Sendable (Key) -> Key?
  private let merge: @Sendable (inout Entry, Entry) -> Void
  private let pending = Mutex<[Key: Entry]>([:])
  /// One report at a time (the periodic flush and the one at stop).
  private let sending = Mutex(false)
  /// Woken when a window opens (the first entry after a flush).
  private let opened: AsyncStream<Void>
  private let open: AsyncStream<Void>.Continuation

  /// - Parameters:
  ///   - interval: window length (the reporters use 10 s).
  ///   - maxEntries: pending keys at most.
  ///   - overflow: where an entry for a key beyond `maxEntries` is counted (nil: it is dropped).
  ///   - merge: folds an undelivered entry into the pending one of the same key (counts add up, the first
  ///     time is the earlier one, the last time the later one).
  public init(
    interval: Duration, maxEntries: Int, overflow: @escaping @Sendable (Key) -> Key? = { _ in nil },
    merge: @escaping @Sendable (inout Entry, Entry) -> Void
  ) {
    self.interval = interval
    self.maxEntries = maxEntries
    self.overflow = overflow
    self.merge = merge
    (opened, open) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
  }

  /// Counts one event under `key`: `change` gets the pending entry (nil for a new key) and leaves the new one.
  /// A new key beyond ``maxEntries`` goes to its overflow key, or nowhere.
  public func record(_ key: Key, _ change: (inout Entry?) -> Void) {
    let first = pending.withLock { p -> Bool in
      let first = p.isEmpty
      guard let k = p[key] == nil && p.count >= maxEntries ? overflow(key) : key else { return false }
      var entry = p[k]
      change(&entry)
      p[k] = entry
      return first && !p.isEmpty
    }
    if first { open.yield(()) }
  }

  /// Whether anything waits to be reported.
  public var isEmpty: Bool { pending.withLock { $0.isEmpty } }

  /// Reports each window ``interval`` after it opened; a window that could not be delivered is tried again an
  /// interval later. Returns when the task is cancelled.
  /// - Parameter send: delivers one report (the entries, unordered); throwing keeps them pending.
  public func run(_ send: @Sendable ([Key: Entry]) async throws -> Void) async {
    for await _ in opened {
      repeat {
        try? await Task.sleep(for: interval)
        await flush(send)
      } while !isEmpty && !Task.isCancelled
      if Task.isCancelled { return }
    }
  }

  /// Sends what is pending now (one report, after the one in flight, if any); on failure the entries are
  /// merged back for the next flush and the error is returned.
  @discardableResult
  public func flush(_ send: @Sendable ([Key: Entry]) async throws -> Void) async -> (any Error)? {
    while !sending.withLock({ s -> Bool in
      if s { return false }
      s = true
      return true
    }) {
      try? await Task.sleep(for: .milliseconds(10))
    }
    defer { sending.withLock { $0 = false } }
    let batch = pending.withLock { p -> [Key: Entry] in
      let all = p
      p = [:]
      return all
    }
    guard !batch.isEmpty else { return nil }
    do {
      try await send(batch)
      return nil
    } catch {
      pending.withLock { p in
        for (key, e) in batch {
          guard let k = p[key] == nil && p.count >= maxEntries ? overflow(key) : key else { continue }
          if var cur = p[k] {
            merge(&cur, e)
            p[k] = cur
          } else {
            p[k] = e
          }
        }
      }
      return error
    }
  }
}
