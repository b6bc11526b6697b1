import OpenShellAPI
import Synchronization

/// A bounded queue of rendered audit events between one producer and one consumer (``AuditWatch``).
///
/// ``push(_:)`` appends and waits while ``capacity`` events are already queued; ``take()`` returns everything
/// queued (waiting until there is something), so a consumer that is slower than the producer gets larger
/// batches. Cancellation of either side's task wakes it: `push` then throws `CancellationError`, `take`
/// returns nil.
final class AuditBatchHandoff: Sendable {
  private struct State {
    var events: [Openshell_Audit_V1_AuditEvent] = []
    var finished = false
    var failure: (any Error)?
    var cancelled = false
    var consumer: CheckedContinuation<Void, Never>?
    var producer: CheckedContinuation<Void, Never>?
  }
  private let state = Mutex(State())
  /// Queued events above which ``push(_:)`` waits.
  let capacity: Int

  init(capacity: Int) {
    self.capacity = max(1, capacity)
  }

  /// Queues `events` (in order), first waiting while the queue is full.
  /// - Throws: `CancellationError` when the producing task is cancelled or the consumer has gone.
  func push(_ events: [Openshell_Audit_V1_AuditEvent]) async throws {
    while true {
      let (wake, queued) = state.withLock { s -> (CheckedContinuation<Void, Never>?, Bool) in
        if s.cancelled || s.events.count >= capacity { return (nil, false) }
        s.events += events
        defer { s.consumer = nil }
        return (s.consumer, true)
      }
      wake?.resume()
      if queued { return }
      try Task.checkCancellation()
      if state.withLock({ $0.cancelled }) { throw CancellationError() }
      await withTaskCancellationHandler {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
          let ready = state.withLock { s -> Bool in
            if s.cancelled || s.events.count < capacity { return true }
            s.producer = c
            return false
          }
          if ready { c.resume() }
        }
      } onCancel: {
        cancel()
      }
    }
  }

  /// Ends the queue: after the queued events, ``take()`` returns nil, or throws `error` when given.
  func finish(_ error: (any Error)?) {
    let wake = state.withLock { s -> CheckedContinuation<Void, Never>? in
      s.finished = true
      s.failure = error
      defer { s.consumer = nil }
      return s.consumer
    }
    wake?.resume()
  }

  /// Everything queued, waiting until something is; nil once finished and drained, or when cancelled.
  /// - Throws: the error the producer finished with.
  func take() async throws -> [Openshell_Audit_V1_AuditEvent]? {
    while true {
      enum Take {
        case events([Openshell_Audit_V1_AuditEvent], CheckedContinuation<Void, Never>?)
        case end((any Error)?)
        case wait
      }
      let take = state.withLock { s -> Take in
        if s.cancelled { return .end(nil) }
        if !s.events.isEmpty {
          let events = s.events
          s.events = []
          s.events.reserveCapacity(events.count)
          defer { s.producer = nil }
          return .events(events, s.producer)
        }
        return s.finished ? .end(s.failure) : .wait
      }
      switch take {
      case .events(let events, let producer):
        producer?.resume()
        return events
      case .end(let error):
        if let error { throw error }
        return nil
      case .wait:
        await withTaskCancellationHandler {
          await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { s -> Bool in
              if s.cancelled || s.finished || !s.events.isEmpty { return true }
              s.consumer = c
              return false
            }
            if ready { c.resume() }
          }
        } onCancel: {
          cancel()
        }
      }
    }
  }

  /// Wakes both sides for good (a cancelled task on either side).
  private func cancel() {
    let (c, p) = state.withLock { s -> (CheckedContinuation<Void, Never>?, CheckedContinuation<Void, Never>?) in
      s.cancelled = true
      defer {
        s.consumer = nil
        s.producer = nil
      }
      return (s.consumer, s.producer)
    }
    c?.resume()
    p?.resume()
  }
}
