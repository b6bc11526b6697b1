import Synchronization

/// Per-subscriber bounded buffer, fed by the writer thread after each commit. The writer never waits on it:
/// when a batch would exceed `capacity` records, the buffer marks itself overflowed and drops records until
/// the consumer notices, reports `.fellBehind` and catches up from history.
final class SubscriberBuffer: Sendable {
  struct State {
    var items: [EventRecord] = []
    var overflowed = false
    var highestOffered: UInt64 = 0  // highest seq published while registered (matching or not)
    var waiter: CheckedContinuation<Void, Never>?
    var closed = false
    var cancelled = false
  }
  let state = Mutex(State())
  let capacity: Int
  let filter: EventFilter

  init(capacity: Int, filter: EventFilter) {
    self.capacity = max(1, capacity)
    self.filter = filter
  }

  /// Called by the writer with the records of one commit (in seq order).
  func offer(_ records: [EventRecord]) {
    guard let last = records.last else { return }
    let matching = filter.isAll ? records : records.filter(filter.matches)
    let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
      if s.closed || s.cancelled { return nil }
      s.highestOffered = last.seq
      if !s.overflowed {
        if s.items.count + matching.count > capacity { s.overflowed = true } else { s.items += matching }
      }
      defer { s.waiter = nil }
      return s.waiter
    }
    waiter?.resume()
  }

  func close() {
    let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
      s.closed = true
      defer { s.waiter = nil }
      return s.waiter
    }
    w?.resume()
  }

  func cancel() {
    let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
      s.cancelled = true
      defer { s.waiter = nil }
      return s.waiter
    }
    w?.resume()
  }

  /// Suspends until something was offered, the buffer overflowed, or it was closed/cancelled.
  func wait() async {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        let ready = state.withLock { s -> Bool in
          if !s.items.isEmpty || s.overflowed || s.closed || s.cancelled { return true }
          s.waiter = c
          return false
        }
        if ready { c.resume() }
      }
    } onCancel: {
      cancel()
    }
  }
}

/// The set of live subscribers. `publish` runs on the writer thread and only takes short locks.
final class SubscriptionHub: Sendable {
  private struct State {
    var buffers: [ObjectIdentifier: SubscriberBuffer] = [:]
    var closed = false
  }
  private let state = Mutex(State())

  /// Registers a buffer; returns false if the log is closed.
  func register(_ b: SubscriberBuffer) -> Bool {
    state.withLock { s in
      if s.closed { return false }
      s.buffers[ObjectIdentifier(b)] = b
      return true
    }
  }

  func remove(_ b: SubscriberBuffer) {
    _ = state.withLock { $0.buffers.removeValue(forKey: ObjectIdentifier(b)) }
  }

  /// Offers committed records to every subscriber. Holds the hub lock so that registration is ordered
  /// with respect to publication (a subscriber registered before a publish sees all of it).
  func publish(_ records: [EventRecord]) {
    state.withLock { s in
      for b in s.buffers.values { b.offer(records) }
    }
  }

  /// Same, but the records are made (by `make`, under the lock) only when a subscriber is registered.
  func publish(_ make: () -> [EventRecord]) {
    state.withLock { s in
      guard !s.buffers.isEmpty else { return }
      let records = make()
      for b in s.buffers.values { b.offer(records) }
    }
  }

  var count: Int { state.withLock { $0.buffers.count } }

  func closeAll() {
    let all = state.withLock { s -> [SubscriberBuffer] in
      s.closed = true
      defer { s.buffers = [:] }
      return Array(s.buffers.values)
    }
    for b in all { b.close() }
  }
}

/// The consumer side of one catch-up subscription (one consumer per stream).
///
/// Protocol (no gap, no duplicate): the buffer is registered with the hub *before* any history is read.
/// History is read in chunks from `nextSeq` until a read finds nothing new; everything committed before the
/// registration (or the last overflow reset) is then delivered, and everything committed after it is in the
/// buffer. The live phase drains the buffer, skipping seqs below `nextSeq` (already sent from history).
/// On overflow the consumer emits `.fellBehind(lastDelivered:)`, clears the buffer and goes back to history.
final class Subscription: @unchecked Sendable {
  private enum Mode { case history, live }
  private let shared: LogShared
  private let filter: EventFilter
  private let buffer: SubscriberBuffer?  // nil for read-only logs: the live phase polls history instead
  private var nextSeq: UInt64  // every matching seq below this was delivered
  private var pending: [EventRecord] = []
  private var pendingIndex = 0
  private var chain: ChainPosition?  // chain hash after the last history chunk (saves a checkpoint lookup)
  private var pendingFloor: UInt64 = 0  // nextSeq may advance to this once `pending` is drained
  private var mode = Mode.history
  private static let historyChunk = 256
  private static let pollNs: UInt64 = 50_000_000

  init(shared: LogShared, from seq: UInt64, filter: EventFilter, live: Bool) {
    self.shared = shared
    self.filter = filter
    nextSeq = max(seq, 1)
    if live {
      let b = SubscriberBuffer(capacity: shared.options.subscriberBufferSize, filter: filter)
      if !shared.hub.register(b) { b.close() }
      buffer = b
    } else {
      buffer = nil
    }
  }

  deinit {
    if let buffer { shared.hub.remove(buffer) }
  }

  /// The next event, or nil when the log closes or the consuming task is cancelled.
  func next() async throws -> EventLog.SubscriptionEvent? {
    do {
      return try await step()
    } catch let e as EventLogError where e.code == .closed {
      return nil
    } catch is CancellationError {
      return nil
    }
  }

  private func step() async throws -> EventLog.SubscriptionEvent? {
    while true {
      if Task.isCancelled { return nil }
      while pendingIndex < pending.count {
        let r = pending[pendingIndex]
        pendingIndex += 1
        if r.seq < nextSeq { continue }  // duplicate of something delivered from history
        nextSeq = r.seq + 1
        return .record(r)
      }
      nextSeq = max(nextSeq, pendingFloor)
      switch mode {
      case .history:
        let (records, last, position) = try shared.readChunk(
          from: nextSeq, through: .max, filter: filter, limit: Self.historyChunk, chain: chain)
        chain = position
        if let last {
          pending = records
          pendingIndex = 0
          pendingFloor = last == .max ? last : last + 1
          // A filter that matches nothing in a long history would otherwise read it all without suspending,
          // holding one of the cooperative pool's threads (two on a 2-core machine) for seconds (issue 14:
          // two such catch-ups kept a restarting gateway from binding its port).
          if records.isEmpty { await Task.yield() }
          continue
        }
        guard let buffer else {
          try await Task.sleep(nanoseconds: Self.pollNs)
          continue
        }
        // Caught up with history as of a read that began after the registration / last reset.
        let reset = buffer.state.withLock { s -> Bool in
          if s.overflowed {
            s.overflowed = false
            s.items = []
            return true
          }
          return false
        }
        if !reset { mode = .live }
      case .live:
        guard let buffer else { mode = .history; continue }
        enum Take {
          case items([EventRecord], UInt64)
          case fellBehind, closed
          case empty(UInt64)
        }
        let take = buffer.state.withLock { s -> Take in
          if s.overflowed {
            s.overflowed = false
            s.items = []
            return .fellBehind
          }
          if !s.items.isEmpty {
            defer { s.items = [] }
            return .items(s.items, s.highestOffered)
          }
          if s.closed || s.cancelled { return .closed }
          return .empty(s.highestOffered)
        }
        switch take {
        case .items(let items, let highest):
          pending = items
          pendingIndex = 0
          pendingFloor = highest == .max ? highest : highest + 1
        case .fellBehind:
          mode = .history
          shared.logger.debug("subscriber fell behind", metadata: ["lastDelivered": "\(nextSeq - 1)"])
          return .fellBehind(lastDelivered: nextSeq - 1)
        case .closed:
          return nil
        case .empty(let highest):
          // Everything offered so far was delivered or filtered out.
          if highest != .max { nextSeq = max(nextSeq, highest + 1) }
          await buffer.wait()
        }
      }
    }
  }
}
