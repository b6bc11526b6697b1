import Foundation
import Synchronization

/// Wall-clock time in ns since the Unix epoch (UTC), `CLOCK_REALTIME`.
func wallClockNs() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_REALTIME, &ts)
  return UInt64(max(0, ts.tv_sec)) * 1_000_000_000 + UInt64(max(0, ts.tv_nsec))
}

/// A one-shot result slot for blocking callers (the writer thread fills it).
private final class ResultSlot<T: Sendable>: Sendable {
  private let cond = NSCondition()
  private let value = Mutex<T?>(nil)

  func fill(_ v: T) {
    cond.lock()
    value.withLock { $0 = v }
    cond.broadcast()
    cond.unlock()
  }

  func wait() -> T {
    cond.lock()
    defer { cond.unlock() }
    while true {
      if let v = value.withLock({ $0 }) { return v }
      cond.wait()
    }
  }
}

extension EventLog {
  /// Appends `events` atomically (all or none) and returns their seqs (consecutive).
  ///
  /// - `expecting`: optimistic-concurrency checks (aggregate → ``ExpectedVersion``), evaluated inside the
  ///   write transaction against the versions stored in `aggregates` plus earlier calls committed in the same
  ///   group. A mismatch throws `.conflict` with `aggregate`, `expected` and `actual` and writes nothing.
  /// - `checkpoint`: also sets checkpoint `name` → `seq` in the same transaction.
  ///
  /// Group commit: concurrent calls share one LMDB write transaction (at most `Options.maxBatchEvents`
  /// events). The call returns after `mdb_txn_commit` returned, i.e. durably with `.sync` durability.
  /// Throws `.invalidArgument` (empty batch, field limits), `.conflict`, `.diskFull` (nothing written),
  /// `.mapFull` (map at `maxMapSize`), `.readOnly`, `.closed`, or other LMDB errors.
  @discardableResult
  public func append(
    _ events: [NewEvent], expecting: [AggregateRef: ExpectedVersion] = [:],
    checkpoint: (name: String, seq: UInt64)? = nil
  ) async throws -> ClosedRange<UInt64> {
    let writer = try requireWriter()
    let events = Self.stamped(events)
    // Unchecked: the writer resumes every submitted call exactly once (its completion runs once per request,
    // on success, failure or a stopping writer), and the checked variant's bookkeeping is per call (issue 14).
    return try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<ClosedRange<UInt64>, Error>) in
      writer.submit(
        .append(
          AppendRequest(
            events: events, expecting: expecting, checkpoint: checkpoint,
            completion: { c.resume(with: $0.mapError { $0 as Error }) })))
    }
  }

  /// Same as ``append(_:expecting:checkpoint:)`` but blocks the calling thread (for tools and tests).
  /// Never call it from the log's own callbacks.
  @discardableResult
  public func appendSync(
    _ events: [NewEvent], expecting: [AggregateRef: ExpectedVersion] = [:],
    checkpoint: (name: String, seq: UInt64)? = nil
  ) throws -> ClosedRange<UInt64> {
    let writer = try requireWriter()
    let slot = ResultSlot<Result<ClosedRange<UInt64>, EventLogError>>()
    writer.submit(
      .append(
        AppendRequest(
          events: Self.stamped(events), expecting: expecting, checkpoint: checkpoint,
          completion: { slot.fill($0) })))
    return try slot.wait().get()
  }

  private static func stamped(_ events: [NewEvent]) -> [NewEvent] {
    // Restores and imports carry their timestamps: no copy of every event then (issue 14: bulk load).
    if events.allSatisfy({ $0.timestampNs != nil }) { return events }
    let now = wallClockNs()
    return events.map { e in
      var e = e
      if e.timestampNs == nil { e.timestampNs = now }
      return e
    }
  }

  /// Runs `body` in its own write transaction on the writer thread and waits for the commit.
  func performWrite(_ body: @escaping @Sendable (Transaction, Compressor) throws -> Void) throws {
    let writer = try requireWriter()
    let slot = ResultSlot<EventLogError?>()
    writer.submit(.job(body, { slot.fill($0) }))
    if let e = slot.wait() { throw e }
  }

  /// Counters of the writer since open: commits (write transactions that stored events), append calls,
  /// events appended, conflicts, map growths, and the largest number of calls in one commit.
  public var writerStats: WriterStats {
    let c = shared.counters
    return WriterStats(
      commits: c.commits.load(ordering: .relaxed), appendCalls: c.appendCalls.load(ordering: .relaxed),
      appendedEvents: c.appendedEvents.load(ordering: .relaxed), conflicts: c.conflicts.load(ordering: .relaxed),
      mapGrowths: c.mapGrowths.load(ordering: .relaxed),
      largestBatchCalls: c.largestBatchCalls.load(ordering: .relaxed),
      prepareNanoseconds: c.prepareNs.load(ordering: .relaxed),
      transactionNanoseconds: c.transactionNs.load(ordering: .relaxed),
      commitNanoseconds: c.commitNs.load(ordering: .relaxed), resumeNanoseconds: c.resumeNs.load(ordering: .relaxed))
  }
}

/// Writer counters since the log was opened (see ``EventLog/writerStats``).
public struct WriterStats: Sendable, Hashable {
  /// Write transactions committed that stored at least one event.
  public var commits: UInt64
  /// `append`/`appendSync` calls processed (successful or not).
  public var appendCalls: UInt64
  /// Events stored.
  public var appendedEvents: UInt64
  /// Calls rejected with `.conflict`.
  public var conflicts: UInt64
  /// Times the LMDB map was grown after `MDB_MAP_FULL`.
  public var mapGrowths: UInt64
  /// Most append calls grouped into one commit.
  public var largestBatchCalls: UInt64
  /// Wall-clock time of the writer thread in the commits counted by `commits`, by phase (they add up to the
  /// writer's busy time; the rest it waited for calls): validating and encoding the calls' events.
  public var prepareNanoseconds: UInt64
  /// Checking expectations, hashing the chain and the LMDB puts of those commits.
  public var transactionNanoseconds: UInt64
  /// `mdb_txn_commit` of those commits: page writes and, with `.sync`, the data-file flush (the meta page is
  /// written, and flushed with the next commit: ``EventLog/Durability/sync``).
  public var commitNanoseconds: UInt64
  /// Publishing the head, feeding subscribers and resuming the callers after those commits.
  public var resumeNanoseconds: UInt64
}
