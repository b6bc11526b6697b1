import AsyncAlgorithms
import EventLog
import LogTools
import OpenShellAPI
import Projections

/// The engine behind WatchEvents and WatchEventBatches (Protos/audit.proto, issue 12): the matching records
/// from a seq, history then live, each seq exactly once and in order, handed to the RPC in batches already in
/// wire form (``AuditWireBatch``).
///
/// History is read in pages of ``pageRecords`` with the log's sequential reader (one read transaction per
/// page, the chain carried between records), each record decoded once and written straight into the batch's
/// wire bytes. A child task reads and encodes the next page while the previous one is sent (the transport
/// serialises, frames and encrypts it on its event loop): an ``AsyncThrowingChannel`` without a buffer hands
/// pages over, so at most one page waits while one is written — memory stays bounded by two batches. At the
/// head the watch continues in the calling task with the log's catch-up subscription, which the log's writer
/// wakes on every commit (no polling, no timer), so a live event crosses no task boundary between the log
/// and the transport. Live records are written as soon as the one just read is the head of the log; while
/// more committed records are already waiting (a burst, a slow client), they are gathered into one batch
/// first. A client that reads slowly holds up the writes, the subscription's buffer overflows and it resumes
/// from history — the log's writer is never blocked.
struct AuditWatch: Sendable {
  let log: EventLog
  let matcher: AuditMatcher
  let from: UInt64

  /// Records per history page (one read transaction and at least one write each).
  static let pageRecords = 2048
  /// Most events gathered into one live batch.
  static let maxLiveBatch = 2048
  /// Upper bound of one WatchEventBatches message in bytes (the client's default limit is 4 MiB).
  static let maxBatchBytes = 1 << 20

  /// Runs until the client goes away (cancellation), the log closes, or `write` throws. `write` receives
  /// consecutive matching events in seq order, never an empty batch, each at most ``maxBatchBytes`` unless
  /// one event alone is larger.
  func run(_ write: (AuditWireBatch) async throws -> Void) async throws {
    var matcher = matcher
    var next = from
    if log.headSeq >= next + UInt64(Self.pageRecords) {
      (matcher, next) = try await history(matcher, from: next, write)
    }
    // The rest of the history, then live records as each commit publishes them. Unfiltered, so that every
    // record — matching or not — tells whether the head is reached (the matcher applies the time bounds).
    var cutter = Cutter(ocsf: matcher.includeOCSF)
    for try await item in log.subscribe(from: next) {
      guard case .record(let record) = item else { continue }
      if let event = try matcher.select(record), let full = cutter.add(record, event) { try await write(full) }
      if !cutter.batch.isEmpty, record.seq >= log.headSeq || cutter.batch.count >= Self.maxLiveBatch {
        try await write(cutter.take())
      }
    }
  }

  /// Whole history pages while the head is ahead of them, read and encoded one page ahead of `write` by a
  /// child task. Returns the matcher (it may have learnt names) and the first seq not yet read.
  private func history(
    _ matcher: AuditMatcher, from start: UInt64, _ write: (AuditWireBatch) async throws -> Void
  ) async throws -> (AuditMatcher, UInt64) {
    let pages = AsyncThrowingChannel<AuditWireBatch, Error>()
    let log = self.log
    return try await withThrowingTaskGroup(of: (AuditMatcher, UInt64).self) { group in
      group.addTask {
        var matcher = matcher
        var next = start
        var cutter = Cutter(ocsf: matcher.includeOCSF)
        do {
          while log.headSeq >= next + UInt64(Self.pageRecords) {
            try Task.checkCancellation()
            let through = next + UInt64(Self.pageRecords) - 1
            var reader = log.read(from: next, through: through, filter: matcher.logFilter, chunkSize: Self.pageRecords)
            while let record = try reader.next() {
              if let event = try matcher.select(record), let full = cutter.add(record, event) { await pages.send(full) }
            }
            next = through + 1
            if !cutter.batch.isEmpty { await pages.send(cutter.take()) }
          }
          pages.finish()
        } catch {
          pages.fail(error)
          throw error
        }
        return (matcher, next)
      }
      for try await batch in pages { try await write(batch) }
      // The channel finished: the producer returned (a failure was rethrown by the loop above).
      guard let result = try await group.next() else { throw CancellationError() }
      return result
    }
  }

  /// Renders selected records into a batch and cuts it at ``AuditWatch/maxBatchBytes``.
  struct Cutter {
    let ocsf: Bool
    var batch = AuditWireBatch()
    let limit: Int

    init(ocsf: Bool, limit: Int = AuditWatch.maxBatchBytes) {
      self.ocsf = ocsf
      self.limit = limit
    }

    /// Appends the event of `record` (its summary, and its OCSF events when asked for); returns the batch
    /// before it when the event would take that batch over the limit.
    mutating func add(_ record: EventRecord, _ event: GatewayEvent) -> AuditWireBatch? {
      let summary = EventSummary.describe(event)
      let ocsf = self.ocsf ? OCSF.events(record, event).map(OCSF.encode) : []
      let size = AuditWireBatch.eventSize(
        seq: record.seq, timestampNs: record.timestampNs, type: record.type, aggregate: record.aggregate, actor: record.actor,
        requestID: record.requestID, summary: summary, ocsf: ocsf)
      var full: AuditWireBatch?
      if !batch.isEmpty, batch.size(appending: size) > limit { full = take() }
      batch.append(
        seq: record.seq, timestampNs: record.timestampNs, type: record.type, aggregate: record.aggregate, actor: record.actor,
        requestID: record.requestID, summary: summary, ocsf: ocsf, size: size)
      return full
    }

    /// The batch so far; starts a new one.
    mutating func take() -> AuditWireBatch {
      defer { batch = AuditWireBatch() }
      return batch
    }
  }
}
