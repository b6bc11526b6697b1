import EventLog
import Foundation
import GRPCCore
import LogTools
import OpenShellAPI
import Projections

/// `openshell.audit.v1.AuditService` (Protos/audit.proto, issue 12): the event log read as an audit
/// trail from a running gateway — a paginated query and a watch (history, then live). Operator
/// identity only. Entries are the redacted lines of `openshell-replay audit` (``AuditMatcher``).
public struct AuditService: Openshell_Audit_V1_AuditService.SimpleServiceProtocol, Sendable {
  let log: EventLog
  /// Default and largest page of ``queryEvents(request:context:)``.
  static let defaultPageSize = 500
  static let maxPageSize = 5000
  /// Upper bound of the events of one QueryEvents response in bytes, below the 4 MiB a gRPC client accepts
  /// by default (swift-grpc, grpcio): a page holds fewer than `page_size` events when theirs are larger
  /// (long summaries, OCSF), and the next page token continues after the last one sent.
  static let maxPageBytes = 3 << 20
  /// The oldest seq this gateway holds. The log keeps every record, so the gateway serves 1; a log that is
  /// ever compacted raises it, and a request below it is answered OUT_OF_RANGE, never with a silent gap.
  let floorSeq: UInt64

  /// - Parameter floorSeq: the oldest seq `log` still holds (1 unless records before it were removed).
  public init(log: EventLog, floorSeq: UInt64 = 1) {
    self.log = log
    self.floorSeq = max(floorSeq, 1)
  }

  /// `openshell.audit.v1.QueryEvents`, operators only: the records matching the filter in a seq range, paginated; OUT_OF_RANGE below the floor.
  public func queryEvents(request: Openshell_Audit_V1_QueryEventsRequest, context: ServerContext) async throws -> Openshell_Audit_V1_QueryEventsResponse {
    try Self.operatorOnly("QueryEvents")
    guard request.pageSize <= Self.maxPageSize else {
      throw RPCErrors.invalidArgument(field: "page_size", "at most \(Self.maxPageSize)")
    }
    let head = log.headSeq
    var from = request.fromSeq == 0 ? floorSeq : request.fromSeq
    if !request.pageToken.isEmpty {
      guard let seq = UInt64(request.pageToken), seq >= 1 else {
        throw RPCErrors.invalidArgument(field: "page_token", "not a token returned by QueryEvents")
      }
      from = seq
    }
    try checkFloor(from, field: "from_seq")
    var query = try Self.query(request.filter)
    query.throughSeq = request.toSeq == 0 ? head : min(request.toSeq, head)
    let size = request.pageSize == 0 ? Self.defaultPageSize : Int(request.pageSize)
    // One extra entry tells whether another page follows.
    // A sandbox or provider the log never held is NOT_FOUND (a deleted one is still found: its history is the
    // point of an audit). A watch accepts it: a sandbox created later under that name is followed.
    let entries: [AuditEntry]
    do {
      entries = try read {
        try Audit.timeline(log, query: query, fromSeq: from, limit: size + 1, ocsf: request.includeOcsf, requireKnownNames: true)
      }
    } catch let unknown as AuditUnknownName {
      throw RPCError(code: .notFound, message: unknown.description)
    }
    var response = Openshell_Audit_V1_QueryEventsResponse()
    let page = Self.page(entries, size: size)
    response.events = page.map(Self.wire)
    if entries.count > page.count, let last = page.last { response.nextPageToken = String(last.seq + 1) }
    response.headSeq = head
    response.floorSeq = floorSeq
    return response
  }

  /// `openshell.audit.v1.WatchEvents`, operators only: history from `from_seq`, then live, one event per message; every seq once, in order; OUT_OF_RANGE below the floor.
  public func watchEvents(request: Openshell_Audit_V1_WatchEventsRequest, response: RPCWriter<Openshell_Audit_V1_AuditEvent>, context: ServerContext)
    async throws
  {
    // The generated route (the served one writes the wire bytes as they are: AuditServiceRoutes.swift).
    try await watch("WatchEvents", request).run { try await response.write(contentsOf: try $0.message().events) }
  }

  /// `openshell.audit.v1.WatchEventBatches`, operators only: as WatchEvents, with many events per message (catch-up at log speed).
  public func watchEventBatches(
    request: Openshell_Audit_V1_WatchEventsRequest, response: RPCWriter<Openshell_Audit_V1_WatchEventsResponse>, context: ServerContext
  ) async throws {
    try await watch("WatchEventBatches", request).run { try await response.write(try $0.message()) }
  }

  /// Checks the caller and `from_seq`, resolves the filter: the watch both methods run (``AuditWatch``).
  func watch(_ rpc: String, _ request: Openshell_Audit_V1_WatchEventsRequest) throws -> AuditWatch {
    try Self.operatorOnly(rpc)
    let from = request.fromSeq == 0 ? floorSeq : request.fromSeq
    try checkFloor(from, field: "from_seq")
    var matcher = try read { try AuditMatcher(log, query: try Self.query(request.filter)) }
    matcher.includeOCSF = request.includeOcsf
    return AuditWatch(log: log, matcher: matcher, from: from)
  }

  /// `openshell.audit.v1.GetSandboxAt`, operators only: a sandbox as it was at a time or seq (a projection of the log up to it); NOT_FOUND when it did not exist then.
  public func getSandboxAt(request: Openshell_Audit_V1_GetSandboxAtRequest, context: ServerContext) async throws -> Openshell_Audit_V1_GetSandboxAtResponse {
    try Self.operatorOnly("GetSandboxAt")
    guard !request.name.isEmpty else { throw RPCErrors.invalidArgument(field: "name", "the sandbox name is required") }
    guard (request.atSeq == 0) != (request.atTimeNs == 0) else {
      throw RPCErrors.invalidArgument(field: "at_seq", "give exactly one of at_seq and at_time_ns")
    }
    let head = log.headSeq
    if request.atSeq > head { throw RPCError(code: .outOfRange, message: "at_seq \(request.atSeq) is beyond the head of the log (seq \(head))") }
    try checkFloor(request.atSeq == 0 ? floorSeq : request.atSeq, field: "at_seq")
    let point: ReplayPoint = request.atSeq > 0 ? .seq(request.atSeq) : .time(request.atTimeNs)
    // A full replay up to the point (the projection is pure, so this is the state the gateway had then).
    let state = try read { try StateLoader.replay(log, through: point) }
    let workspace = request.workspace.isEmpty ? GatewayState.defaultWorkspace : request.workspace
    let view = StateView(state)
    guard let sandbox = view.sandboxes.first(where: { ($0.name == request.name || $0.id == request.name) && $0.workspace == workspace }) else {
      throw RPCErrors.notFound("sandbox \(workspace)/\(request.name) at seq \(state.lastSeq)")
    }
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return .with {
      $0.seq = state.lastSeq
      $0.sandboxJson = String(decoding: (try? e.encode(sandbox)) ?? Data("{}".utf8), as: UTF8.self)
    }
  }

  // MARK: helpers

  static func operatorOnly(_ rpc: String) throws {
    let caller = CallerIdentity.current
    guard caller.isOperator else {
      throw RPCErrors.permissionDenied("\(rpc) is only available to the operator identity (mTLS client certificate with OU=operator), not to \(caller.actor)")
    }
  }

  func checkFloor(_ seq: UInt64, field: String) throws {
    guard seq >= floorSeq else {
      throw RPCError(code: .outOfRange, message: "\(field) \(seq) is below the oldest record this gateway holds (seq \(floorSeq))")
    }
  }

  static func query(_ f: Openshell_Audit_V1_AuditFilter) throws -> AuditQuery {
    var q = AuditQuery()
    q.sandbox = f.sandbox.isEmpty ? nil : f.sandbox
    q.provider = f.provider.isEmpty ? nil : f.provider
    q.actor = f.actor.isEmpty ? nil : f.actor
    q.types = f.types
    q.sinceNs = f.sinceNs == 0 ? nil : f.sinceNs
    q.untilNs = f.untilNs == 0 ? nil : f.untilNs
    if let s = q.sinceNs, let u = q.untilNs, u <= s {
      throw RPCErrors.invalidArgument(field: "filter.until_ns", "must be after since_ns")
    }
    return q
  }

  /// The first at most `size` of `entries` whose encoded events fit in `maxBytes` (at least one entry).
  static func page(_ entries: [AuditEntry], size: Int, maxBytes: Int = maxPageBytes) -> ArraySlice<AuditEntry> {
    var bytes = 0
    var n = 0
    for e in entries.prefix(size) {
      var event = AuditWireBatch.eventSize(
        seq: e.seq, timestampNs: e.timestampNs, typeCount: e.type.utf8.count, aggregateCount: e.aggregate.utf8.count,
        actorCount: e.actor.utf8.count, requestIDCount: e.requestID.utf8.count, summaryCount: e.summary.utf8.count)
      for o in e.ocsf ?? [] { event += 1 + AuditWireBatch.varintSize(UInt64(o.utf8.count)) + o.utf8.count }
      let field = 1 + AuditWireBatch.varintSize(UInt64(event)) + event
      if n > 0, bytes + field > maxBytes { break }
      bytes += field
      n += 1
    }
    return entries.prefix(n)
  }

  static func wire(_ e: AuditEntry) -> Openshell_Audit_V1_AuditEvent {
    .with {
      $0.seq = e.seq
      $0.timestampNs = e.timestampNs
      $0.type = e.type
      $0.aggregate = e.aggregate
      $0.actor = e.actor
      $0.requestID = e.requestID
      $0.summary = e.summary
      $0.ocsf = e.ocsf ?? []
    }
  }

  /// Runs a read; its `EventLogError`/`ProjectionError` carry their own status (``ErrorFunnel``).
  func read<T>(_ body: () throws -> T) throws -> T {
    try body()
  }
}
