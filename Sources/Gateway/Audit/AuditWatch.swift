import AsyncAlgorithms
import EventLog
import Foundation
import LogTools
import OpenShellAPI
import Projections

/// The engine behind WatchEvents and WatchEventBatches (Protos/audit.proto, issue 12): the matching records
/// from a seq, history then live, each seq exactly once and in order, handed to the RPC in batches already in
/// wire form (``AuditWireBatch``).
///
/// History is read in pages of ``pageRecords``, one read transaction per page. The common catch-up (no
/// sandbox, provider or OCSF) borrows each record from the read buffers (``EventLog/visitRecords(from:through:limit:_:)``:
/// no `EventRecord`, no chain hash; CRCs checked) and writes the summary of the kinds ``AuditFastSummary`` knows
/// from the payload bytes; other queries use the log's sequential reader. Each record is decoded at most once and
/// written straight into the batch's wire bytes. Child tasks read and encode the next pages while the current one is sent (the transport
/// serialises, frames and encrypts it on its event loop): one ``AsyncThrowingChannel`` without a buffer per
/// worker hands pages over in order, so memory stays bounded by one page per worker plus the one written. At the
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
  /// History workers (``historyWorkers``); a query naming a sandbox or a provider always uses one.
  var workers = AuditWatch.historyWorkers

  /// Records per history page (one read transaction and at least one write each).
  static let pageRecords = 2048
  /// Tasks that read and encode history pages in parallel, by default: two on a machine with more than two
  /// cores, else one. A page is read synchronously and holds a thread of Swift's cooperative pool (one thread
  /// per core) for a few milliseconds; on two cores, two workers would take both and make every other call
  /// of the gateway wait (measured in-process with the client on the same two cores: no faster either).
  static let historyWorkers = ProcessInfo.processInfo.activeProcessorCount > 2 ? 2 : 1
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
    // `from` is the client's from_seq: compared by difference, since `next + pageRecords` overflows (a trap,
    // the gateway gone) for a from_seq within a page of UInt64.max.
    let head = log.headSeq
    if head >= next, head - next >= UInt64(Self.pageRecords) {
      (matcher, next) = try await history(matcher, from: next, write)
    }
    // The rest of the history, then live records as each commit publishes them. Unfiltered, so that every
    // record — matching or not — tells whether the head is reached (the matcher applies the time bounds).
    var cutter = Cutter(ocsf: matcher.includeOCSF)
    for try await item in log.subscribe(from: next) {
      guard case .record(let record) = item else { continue }
      if let full = try cutter.add(record, &matcher) { try await write(full) }
      if !cutter.batch.isEmpty, record.seq >= log.headSeq || cutter.batch.count >= Self.maxLiveBatch {
        try await write(cutter.take())
      }
    }
  }

  /// Whole history pages while the head is ahead of them, read and encoded ahead of `write` by
  /// ``workers`` child tasks (page k by worker k mod n; one for a query that names a sandbox or a
  /// provider, whose matcher learns ids in seq order) and written strictly in page order. Each worker holds
  /// at most one finished page until the writer takes it. The first page a worker finds incomplete (the head
  /// is inside it) ends the history: pages after it, if another worker read one, are dropped and read again
  /// by the subscription. Returns the matcher (it may have learnt names) and the first seq not written.
  private func history(
    _ matcher: AuditMatcher, from start: UInt64, _ write: (AuditWireBatch) async throws -> Void
  ) async throws -> (AuditMatcher, UInt64) {
    let scoped = matcher.query.sandbox != nil || matcher.query.provider != nil
    let workers = scoped ? 1 : max(1, self.workers)
    let pages = (0..<workers).map { _ in AsyncThrowingChannel<Page, Error>() }
    let log = self.log
    return try await withThrowingTaskGroup(of: Void.self) { group in
      for w in 0..<workers {
        group.addTask {
          var matcher = matcher
          var page = UInt64(w)
          let size = UInt64(Self.pageRecords)
          var cutter = Cutter(ocsf: matcher.includeOCSF)
          do {
            while log.headSeq >= start + (page + 1) * size {
              try Task.checkCancellation()
              let first = start + page * size
              var batches: [AuditWireBatch] = []
              if scoped || matcher.includeOCSF {
                var reader = log.read(from: first, through: first + size - 1, filter: matcher.logFilter, chunkSize: Self.pageRecords)
                while let record = try reader.next() {
                  if let full = try cutter.add(record, &matcher) { batches.append(full) }
                }
              } else {
                // The common catch-up (no sandbox, provider or OCSF): records borrowed from the read buffers.
                _ = try log.visitRecords(from: first, through: first + size - 1, limit: Self.pageRecords) { record in
                  if let full = try cutter.add(record, &matcher) { batches.append(full) }
                  return true
                }
              }
              if !cutter.batch.isEmpty { batches.append(cutter.take()) }
              await pages[w].send(Page(batches: batches, matcher: scoped ? matcher : nil))
              page += UInt64(workers)
            }
            pages[w].finish()
          } catch {
            pages[w].fail(error)
          }
        }
      }
      var matcher = matcher
      var iterators = pages.map { $0.makeAsyncIterator() }
      var written: UInt64 = 0
      while let page = try await iterators[Int(written % UInt64(workers))].next() {
        for batch in page.batches { try await write(batch) }
        if let m = page.matcher { matcher = m }
        written += 1
      }
      group.cancelAll()
      return (matcher, start + written * UInt64(Self.pageRecords))
    }
  }

  /// One history page: its batches (none when no record matched) and, for a scoped query, the matcher after it.
  private struct Page: Sendable {
    var batches: [AuditWireBatch]
    var matcher: AuditMatcher?
  }

  /// Renders selected records into a batch and cuts it at ``AuditWatch/maxBatchBytes``.
  struct Cutter {
    let ocsf: Bool
    var batch = AuditWireBatch()
    let limit: Int
    /// The fast path's summary, reused between records.
    private var scratch: [UInt8] = []

    init(ocsf: Bool, limit: Int = AuditWatch.maxBatchBytes) {
      self.ocsf = ocsf
      self.limit = limit
    }

    /// Appends `record` if `matcher` selects it; returns the batch before it when the event would take that
    /// batch over the limit. Without OCSF and for a query that names no sandbox or provider, the summary of
    /// the commonest audit kinds is written from the payload bytes (``AuditFastSummary``, no decode); every
    /// other record is decoded and rendered by ``add(_:_:)``.
    /// - Throws: `ProjectionError` when a selected record's payload does not decode.
    mutating func add(_ record: EventRecord, _ matcher: inout AuditMatcher) throws -> AuditWireBatch? {
      if !ocsf, record.payloadVersion == gatewayEventSchemaVersion, let selected = matcher.selectsByHeader(record) {
        guard selected else { return nil }
        scratch.removeAll(keepingCapacity: true)
        let rendered = record.payload.withUnsafeBytes { AuditFastSummary.render($0, type: record.type, into: &scratch) }
        if rendered {
          return scratch.withUnsafeBytes { add(record, summary: $0) }
        }
      }
      guard let event = try matcher.select(record) else { return nil }
      return add(record, event)
    }

    /// ``add(_:_:)-(EventRecord,_)`` for a borrowed record (the watch's history, issue 12): the summary of the
    /// kinds ``AuditFastSummary`` knows is written from the borrowed payload; any other record is copied out
    /// and decoded.
    /// - Throws: `ProjectionError` when a selected record's payload does not decode.
    mutating func add(_ record: BorrowedRecord, _ matcher: inout AuditMatcher) throws -> AuditWireBatch? {
      if !ocsf, record.payloadVersion == gatewayEventSchemaVersion,
        let selected = matcher.selectsByHeader(timestampNs: record.timestampNs, type: record.type, actor: record.actor)
      {
        guard selected else { return nil }
        scratch.removeAll(keepingCapacity: true)
        if AuditFastSummary.render(record.payload, type: record.type, into: &scratch) {
          return scratch.withUnsafeBytes { add(record, summary: $0) }
        }
      }
      let owned = record.unchainedRecord()
      guard let event = try matcher.select(owned) else { return nil }
      return add(owned, event)
    }

    /// Appends a borrowed `record` with a summary already rendered (UTF-8 bytes), cutting as ``add(_:_:)``.
    private mutating func add(_ record: BorrowedRecord, summary: UnsafeRawBufferPointer) -> AuditWireBatch? {
      let size = AuditWireBatch.eventSize(
        seq: record.seq, timestampNs: record.timestampNs, typeCount: record.type.utf8.count,
        aggregateCount: record.kind.utf8.count + 1 + record.id.count, actorCount: record.actor.utf8.count,
        requestIDCount: record.requestID.count, summaryCount: summary.count)
      var full: AuditWireBatch?
      if !batch.isEmpty, batch.size(appending: size) > limit { full = take() }
      batch.append(
        seq: record.seq, timestampNs: record.timestampNs, type: record.type, kind: record.kind, id: record.id,
        actor: record.actor, requestID: record.requestID, summary: summary, ocsf: [], size: size)
      return full
    }

    /// Appends `record` with a summary already rendered (UTF-8 bytes), cutting as ``add(_:_:)``.
    mutating func add(_ record: EventRecord, summary: UnsafeRawBufferPointer) -> AuditWireBatch? {
      let size = AuditWireBatch.eventSize(
        seq: record.seq, timestampNs: record.timestampNs, type: record.type, aggregate: record.aggregate, actor: record.actor,
        requestID: record.requestID, summaryCount: summary.count, ocsf: [])
      var full: AuditWireBatch?
      if !batch.isEmpty, batch.size(appending: size) > limit { full = take() }
      batch.append(
        seq: record.seq, timestampNs: record.timestampNs, type: record.type, aggregate: record.aggregate, actor: record.actor,
        requestID: record.requestID, summary: summary, ocsf: [], size: size)
      return full
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
      let size = batch.bytes.count
      defer {
        batch = AuditWireBatch()
        // The next batch is likely as large: growing it by doubling would copy it about once more.
        batch.reserveCapacity(min(size + size / 8, limit + limit / 8))
      }
      return batch
    }
  }
}
