import CLMDB
import Foundation
import Logging
import Synchronization

/// One call to `append`, waiting in the writer queue.
struct AppendRequest: Sendable {
  var events: [NewEvent]  // timestamps already filled in
  var expecting: [AggregateRef: ExpectedVersion]
  var checkpoint: (name: String, seq: UInt64)?
  var completion: @Sendable (Result<ClosedRange<UInt64>, EventLogError>) -> Void
}

/// Work for the writer thread: appends are group-committed; other jobs get a write transaction each.
enum WriterJob: Sendable {
  case append(AppendRequest)
  case job(@Sendable (Transaction, Compressor) throws -> Void, @Sendable (EventLogError?) -> Void)
}

/// Head of the chain and settings the writer changes, published for readers after each commit.
struct PublishedState: Sendable {
  var headSeq: UInt64 = 0
  var headHash: [UInt8] = RecordFormat.zeroHash
  var activeDictionaryID: UInt32 = 0
}

/// Counters for observability and tests (all monotonically increasing).
final class WriterCounters: Sendable {
  let commits = Atomic<UInt64>(0)
  let appendCalls = Atomic<UInt64>(0)
  let appendedEvents = Atomic<UInt64>(0)
  let conflicts = Atomic<UInt64>(0)
  let mapGrowths = Atomic<UInt64>(0)
  let largestBatchCalls = Atomic<UInt64>(0)
  /// Writer-thread wall-clock nanoseconds per phase of the commits that stored events (``WriterStats``).
  let prepareNs = Atomic<UInt64>(0)
  let transactionNs = Atomic<UInt64>(0)
  let commitNs = Atomic<UInt64>(0)
  let resumeNs = Atomic<UInt64>(0)
}

/// Monotonic nanoseconds (`CLOCK_MONOTONIC`), for the writer's phase timings.
@inline(__always) func monotonicNs() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return UInt64(max(0, ts.tv_sec)) * 1_000_000_000 + UInt64(max(0, ts.tv_nsec))
}

/// The single writer thread. LMDB write transactions are bound to the thread that began them, so every
/// write goes through this thread, fed by a queue. Consecutive append calls waiting in the queue share one
/// write transaction (group commit) of at most `maxBatchEvents` events (a single larger call still runs alone).
final class Writer: @unchecked Sendable {
  /// Guards the queue and wakes the writer thread; its timed wait (``gatherGroup()``) is monotonic.
  let cond = MonotonicCondition()
  var queue: [WriterJob] = []  // guarded by cond
  var stopping = false  // guarded by cond
  /// While the writer gathers a group (``gatherGroup()``): the queue length it waits for; 0 otherwise.
  /// Guarded by cond.
  var gatherTarget = 0
  /// Calls queued when the last group's commit returned (before its callers were resumed), and that group's
  /// calls and `mdb_txn_commit` time: what ``gatherGroup()`` expects next. Writer thread only.
  var gather = GatherState()
  private var finished = false  // guarded by cond
  let shared: LogShared
  // Writer-thread state:
  var head: PublishedState
  var activeDictionary: ZstdDictionary?
  var compressor: Compressor
  /// Encodes records on the writer thread (with ``compressor``).
  let encoder: RecordEncoder
  /// Extra encoders for large calls, one per further core (``encodeRecords(_:dictionaryID:)``), made on
  /// first use.
  var encoders: [RecordEncoder] = []
  /// Seq of the newest chain checkpoint (``ChainCheckpoints``).
  var lastCheckpoint: UInt64
  /// Whether the log's format marker (`meta` `format`) is already ``RecordFormat/formatVersion``. Until it
  /// is, the first commit that stores records raises it in the same transaction: a log is marked for the
  /// records it holds, so opening an older build's log for writing without appending (a rebuilt snapshot)
  /// leaves it readable by that build.
  var formatMarked: Bool

  init(shared: LogShared, head: PublishedState, activeDictionary: ZstdDictionary?) throws {
    self.shared = shared
    let dbs = shared.env.dbs
    (lastCheckpoint, formatMarked) = try shared.env.withRead { txn in
      let marker = try txn.get(dbs.meta, MetaKey.format).flatMap { decodeBE32($0) } ?? 0
      return (try ChainCheckpoints.lastSeq(txn, dbs), marker >= UInt32(RecordFormat.formatVersion))
    }
    self.head = head
    self.activeDictionary = activeDictionary
    compressor = try Compressor(options: shared.options)
    encoder = RecordEncoder(compressor: compressor)
  }

  func start() {
    let t = Thread { [self] in run() }
    t.name = "eventlog-writer"
    t.start()
  }

  /// Enqueues a job; fails it with `.closed` if the writer is stopping.
  func submit(_ job: WriterJob) {
    cond.lock()
    if stopping {
      cond.unlock()
      switch job {
      case .append(let r): r.completion(.failure(.closed()))
      case .job(_, let done): done(.closed())
      }
      return
    }
    queue.append(job)
    // A gathering writer is woken once, when the calls it waits for are there (not by every call).
    if gatherTarget == 0 || queue.count >= gatherTarget { cond.signal() }
    cond.unlock()
  }

  /// Lets queued jobs finish, then stops the thread and waits for it.
  func stop() {
    cond.lock()
    stopping = true
    cond.broadcast()
    while !finished { cond.wait() }
    cond.unlock()
  }

  private func run() {
    while true {
      cond.lock()
      while queue.isEmpty && !stopping { cond.wait() }
      if queue.isEmpty {
        finished = true
        cond.broadcast()
        cond.unlock()
        return
      }
      gatherGroup()
      var batch: [AppendRequest] = []
      var single: WriterJob?
      if case .append = queue[0] {
        var events = 0
        while case .append(let r)? = queue.first,
          batch.isEmpty || events + r.events.count <= shared.options.maxBatchEvents
        {
          batch.append(r)
          events += r.events.count
          queue.removeFirst()
        }
      } else {
        single = queue.removeFirst()
      }
      cond.unlock()
      if case .job(let body, let done)? = single {
        runJob(body, done)
      } else {
        runAppends(batch)
      }
    }
  }

  private func runJob(_ body: (Transaction, Compressor) throws -> Void, _ done: (EventLogError?) -> Void) {
    do {
      try withMapGrowth { try shared.env.withWrite { try body($0, compressor) } }
      // Only group commits carry a CommitMarker: any other write is made durable with its meta page now.
      if shared.options.durability == .sync { try check(mdb_env_sync(shared.env.env, 1), "mdb_env_sync") }
      // A job may have activated a dictionary.
      reloadActiveDictionary()
      done(nil)
    } catch let e as EventLogError {
      done(classifyWriteError(e, approximateBytes: 0))
    } catch {
      done(EventLogError(code: .storage, message: "\(error)"))
    }
  }

  /// Re-reads `dict.active` from `meta` after a job (a job may have activated a new dictionary) and makes
  /// it the one new appends use.
  private func reloadActiveDictionary() {
    guard let id = try? shared.env.withRead({ try readHeadState($0, shared.env.dbs).activeDictionaryID }),
      id != head.activeDictionaryID
    else { return }
    do {
      activeDictionary = id == 0 ? nil : try shared.dictionary(id)
      head.activeDictionaryID = id
      shared.state.withLock { $0.activeDictionaryID = id }
      shared.logger.info("zstd dictionary activated", metadata: ["id": "\(id)"])
    } catch {
      shared.logger.error("cannot load zstd dictionary", metadata: ["id": "\(id)", "error": "\(error)"])
    }
  }

  /// LMDB reports a short write during commit as `EIO` ("short write, filesystem full?" in `mdb_page_flush`),
  /// so an `EIO`/`ENOSPC` is reported as `.diskFull` when the file system has less than
  /// max(1 MiB, 4 × the batch) available (`statvfs`).
  func classifyWriteError(_ e: EventLogError, approximateBytes: Int) -> EventLogError {
    guard e.code == .io || e.code == .diskFull, e.errno == EIO || e.errno == ENOSPC || e.errno == EDQUOT else {
      return e
    }
    var fs = statvfs()
    guard statvfs(shared.directory, &fs) == 0 else { return e }
    let available = UInt64(fs.f_bavail) * UInt64(fs.f_frsize)
    let needed = UInt64(max(1 << 20, approximateBytes * 4))
    if e.code == .diskFull || available < needed {
      return EventLogError(
        code: .diskFull,
        message: "file system full (\(available) bytes available): \(e.message); nothing of this transaction was written",
        lmdbCode: e.lmdbCode, errno: e.errno)
    }
    return e
  }

  /// Runs `body`, growing the map and retrying while it fails with `MDB_MAP_FULL` (LMDB docs:
  /// `mdb_env_set_mapsize` "may be called ... if no transactions are active" — the failed transaction has
  /// already been aborted). Growth doubles the map up to `maxMapSize`.
  func withMapGrowth<T>(_ body: () throws -> T) throws -> T {
    while true {
      do {
        return try body()
      } catch let e as EventLogError where e.code == .mapFull {
        let current = shared.env.mapSize
        let limit = shared.options.maxMapSize
        guard current < limit else {
          throw EventLogError(
            code: .mapFull, message: "map is full at maxMapSize (\(limit) bytes)", lmdbCode: e.lmdbCode)
        }
        let next = min(max(current * 2, current + 4096), limit)
        try shared.env.setMapSize(next)
        shared.counters.mapGrowths.add(1, ordering: .relaxed)
        shared.logger.info("event log map grown", metadata: ["from": "\(current)", "to": "\(next)"])
      }
    }
  }
}
