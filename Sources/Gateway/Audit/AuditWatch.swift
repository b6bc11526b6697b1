import EventLog
import LogTools
import OpenShellAPI
import Projections

/// The engine behind WatchEvents and WatchEventBatches (Protos/audit.proto, issue 12): the matching records
/// from a seq, history then live, each seq exactly once and in order, handed to the RPC in batches.
///
/// One task does everything, so an event crosses no task or actor boundary between the log and the transport
/// (each hop is a scheduling delay on a busy machine): the history is read in pages of ``pageRecords`` with
/// the log's sequential reader (one read transaction per page, the chain carried between records), each
/// record decoded once and rendered straight into its wire form, one write per page. At the head it continues
/// with the log's catch-up subscription, which the log's writer wakes on every commit (no polling, no timer).
/// Live records are written as soon as the one just read is the head of the log; while more committed records
/// are already waiting (a burst, a slow client), they are gathered into one batch first. Memory stays bounded:
/// a client that reads slowly holds up the writes, the subscription's buffer overflows and it resumes from
/// history — the log's writer is never blocked.
struct AuditWatch: Sendable {
  let log: EventLog
  let matcher: AuditMatcher
  let from: UInt64

  /// Records per history page (one read transaction and one write each).
  static let pageRecords = 2048
  /// Most events gathered into one live batch.
  static let maxLiveBatch = 2048
  /// Upper bound of one WatchEventBatches message (the client's default limit is 4 MiB).
  static let maxBatchBytes = 1 << 20

  /// Runs until the client goes away (cancellation), the log closes, or `write` throws. `write` receives
  /// consecutive matching events in seq order, each batch at most ``maxBatchBytes`` (estimated) unless one
  /// event alone is larger.
  func run(_ write: ([Openshell_Audit_V1_AuditEvent]) async throws -> Void) async throws {
    var matcher = matcher
    let ocsf = matcher.includeOCSF
    func send(_ events: [Openshell_Audit_V1_AuditEvent]) async throws {
      for batch in Self.split(events) { try await write(Array(batch)) }
    }
    var next = from
    // History: whole pages while the head is ahead of them.
    while log.headSeq >= next + UInt64(Self.pageRecords) {
      try Task.checkCancellation()
      let through = next + UInt64(Self.pageRecords) - 1
      var page: [Openshell_Audit_V1_AuditEvent] = []
      page.reserveCapacity(Self.pageRecords)
      var reader = log.read(from: next, through: through, filter: matcher.logFilter, chunkSize: Self.pageRecords)
      while let record = try reader.next() {
        if let event = try matcher.select(record) { page.append(Self.wire(record, event, ocsf: ocsf)) }
      }
      next = through + 1
      if !page.isEmpty { try await send(page) }
    }
    // The rest of the history, then live records as each commit publishes them. Unfiltered, so that every
    // record — matching or not — tells whether the head is reached (the matcher applies the time bounds).
    var pending: [Openshell_Audit_V1_AuditEvent] = []
    for try await item in log.subscribe(from: next) {
      guard case .record(let record) = item else { continue }
      if let event = try matcher.select(record) { pending.append(Self.wire(record, event, ocsf: ocsf)) }
      if !pending.isEmpty, record.seq >= log.headSeq || pending.count >= Self.maxLiveBatch {
        try await send(pending)
        pending.removeAll(keepingCapacity: true)
      }
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
