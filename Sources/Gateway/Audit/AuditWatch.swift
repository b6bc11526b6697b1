import EventLog
import LogTools
import OpenShellAPI
import Projections

/// The engine behind WatchEvents and WatchEventBatches (Protos/audit.proto, issue 12): the matching records
/// from a seq, history then live, each seq at most once and in order, handed to the RPC in batches.
///
/// Two tasks share a bounded ``AuditBatchHandoff``: the producer reads the history in pages of ``pageRecords``
/// with the log's sequential reader (one read transaction per page, the chain carried between records),
/// decodes each record once and renders it straight into its wire form; at the head it continues with the log's
/// catch-up subscription, which the log's writer wakes on every commit (no polling). The consumer takes
/// everything rendered so far and writes it, so the producer works on the next page while the transport
/// encodes and sends the previous one, and live events go out one by one when they trickle in but in
/// batches under bursts. The handoff holds at most ``bufferedEvents`` events: a slow client slows the
/// producer, and then the log subscription falls behind and resumes from history — memory stays bounded and
/// the writer is never blocked.
struct AuditWatch: Sendable {
  let log: EventLog
  let matcher: AuditMatcher
  let from: UInt64

  /// Records per history page (one read transaction each).
  static let pageRecords = 2048
  /// Events rendered but not yet written before the producer waits.
  static let bufferedEvents = 8192
  /// Upper bound of one WatchEventBatches message (the client's default limit is 4 MiB).
  static let maxBatchBytes = 1 << 20

  /// Runs until the client goes away, the log closes, or `write` throws. `write` receives consecutive
  /// matching events in seq order, each batch at most ``maxBatchBytes`` (estimated) unless one event alone
  /// is larger.
  func run(_ write: ([Openshell_Audit_V1_AuditEvent]) async throws -> Void) async throws {
    let handoff = AuditBatchHandoff(capacity: Self.bufferedEvents)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        do {
          try await produce(into: handoff)
          handoff.finish(nil)
        } catch {
          handoff.finish(error)
        }
      }
      // The consumer ends on a write error, on the client going away (cancellation) or when the producer has
      // finished (the log closed) and everything it rendered was written; then the producer is stopped too.
      defer { group.cancelAll() }
      while let events = try await handoff.take() {
        for batch in Self.split(events) { try await write(Array(batch)) }
      }
    }
  }

  private func produce(into handoff: AuditBatchHandoff) async throws {
    var matcher = matcher
    var next = from
    // History: whole pages while the head is ahead of them.
    while log.headSeq >= next + UInt64(Self.pageRecords) {
      try Task.checkCancellation()
      let through = next + UInt64(Self.pageRecords) - 1
      var page: [Openshell_Audit_V1_AuditEvent] = []
      page.reserveCapacity(Self.pageRecords)
      var reader = log.read(from: next, through: through, filter: matcher.logFilter, chunkSize: Self.pageRecords)
      while let record = try reader.next() {
        if let event = try matcher.select(record) { page.append(Self.wire(record, event, ocsf: matcher.includeOCSF)) }
      }
      next = through + 1
      if !page.isEmpty { try await handoff.push(page) }
    }
    // The rest of the history, then live records as each commit publishes them.
    for try await item in log.subscribe(from: next, filter: matcher.logFilter) {
      guard case .record(let record) = item else { continue }
      if let event = try matcher.select(record) { try await handoff.push([Self.wire(record, event, ocsf: matcher.includeOCSF)]) }
    }
  }

  /// The wire form of a selected record: the redacted summary line of `openshell-replay audit`, rendered from
  /// the event already decoded (no time string: the client formats `timestamp_ns` itself).
  static func wire(_ record: EventRecord, _ event: GatewayEvent, ocsf: Bool) -> Openshell_Audit_V1_AuditEvent {
    var e = Openshell_Audit_V1_AuditEvent()
    e.seq = record.seq
    e.timestampNs = record.timestampNs
    e.type = record.type
    e.aggregate = record.aggregate.kind + "/" + record.aggregate.id
    e.actor = record.actor
    e.requestID = record.requestID
    e.summary = EventSummary.describe(event)
    if ocsf { e.ocsf = OCSF.events(record, event).map(OCSF.encode) }
    return e
  }

  /// Cuts `events` into consecutive batches of at most ``maxBatchBytes`` (an estimate of the encoded size).
  static func split(_ events: [Openshell_Audit_V1_AuditEvent]) -> [ArraySlice<Openshell_Audit_V1_AuditEvent>] {
    var batches: [ArraySlice<Openshell_Audit_V1_AuditEvent>] = []
    var start = 0
    var bytes = 0
    for (i, e) in events.enumerated() {
      let size =
        40 + e.type.utf8.count + e.aggregate.utf8.count + e.actor.utf8.count + e.requestID.utf8.count
        + e.summary.utf8.count + e.ocsf.reduce(0) { $0 + $1.utf8.count + 4 }
      if bytes + size > maxBatchBytes, i > start {
        batches.append(events[start..<i])
        start = i
        bytes = 0
      }
      bytes += size
    }
    if start < events.count { batches.append(events[start...]) }
    return batches
  }
}
