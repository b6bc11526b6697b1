import EventLog
import Foundation
import Projections

/// Decides which records an ``AuditQuery`` selects and renders them as ``AuditEntry`` values; used by
/// `openshell-replay audit` and by the gateway's audit API (history and live).
///
/// Sandbox and provider filters take a name or an id. Names are resolved to ids by scanning the log
/// once at creation (so a deleted object, or one whose name was reused, is still found), and records
/// passed to ``entry(_:)`` later keep extending the set (a sandbox created under that name while a
/// watch runs is followed too).
public struct AuditMatcher: Sendable {
  public let query: AuditQuery
  /// Whether ``entry(_:)`` also renders the record's OCSF events (``AuditEntry/ocsf``).
  public var includeOCSF = false
  private var sandboxIDs: Set<String> = []
  private var providerIDs: Set<String> = []

  /// Aggregate kinds that belong to a sandbox (their aggregate id is the sandbox id).
  static let sandboxKinds: Set<String> = ["sandbox", "policy", "settings", "network", "exec", "credentials", "ssh_tunnel"]

  /// - Throws: `EventLogError`, `ProjectionError` while resolving names.
  public init(_ log: EventLog, query: AuditQuery) throws {
    self.query = query
    guard query.sandbox != nil || query.provider != nil else { return }
    var sandboxes: Set<String> = []
    var providers: Set<String> = []
    try log.forEach(from: 1, through: query.throughSeq, filter: EventFilter(types: ["sandbox.requested", "provider.created"])) { record in
      Self.resolve(record, query, &sandboxes, &providers)
    }
    sandboxIDs = sandboxes
    providerIDs = providers
  }

  /// The header-only prefilter for log reads (time bounds); the rest is checked in ``entry(_:)``.
  public var logFilter: EventFilter {
    EventFilter(sinceNs: query.sinceNs, untilNs: query.untilNs)
  }

  /// The entry for `record` if the query selects it, else nil.
  /// - Throws: `ProjectionError` when the payload cannot be decoded.
  public mutating func entry(_ record: EventRecord) throws -> AuditEntry? {
    try observe(record)
    guard logFilter.matches(record) else { return nil }
    if let actor = query.actor, record.actor != actor, !record.actor.contains(actor) { return nil }
    if !query.types.isEmpty, !query.types.contains(where: { record.type == $0 || ($0.hasSuffix(".") && record.type.hasPrefix($0)) }) {
      return nil
    }
    if query.sandbox != nil || query.provider != nil {
      let agg = record.aggregate
      let matchesSandbox = query.sandbox != nil && Self.sandboxKinds.contains(agg.kind) && sandboxIDs.contains(agg.id)
      let matchesProvider = query.provider != nil && agg.kind == "provider" && providerIDs.contains(agg.id)
      if !matchesSandbox && !matchesProvider { return nil }
    }
    let event = try GatewayEvent.decode(record)
    return AuditEntry(
      seq: record.seq, time: rfc3339(ns: record.timestampNs), timestampNs: record.timestampNs, actor: record.actor,
      requestID: record.requestID, type: record.type, aggregate: "\(record.aggregate.kind)/\(record.aggregate.id)",
      summary: EventSummary.describe(event), ocsf: includeOCSF ? OCSF.events(record, event).map(OCSF.encode) : nil)
  }

  private mutating func observe(_ record: EventRecord) throws {
    guard query.sandbox != nil || query.provider != nil else { return }
    Self.resolve(record, query, &sandboxIDs, &providerIDs)
  }

  /// Adds the id of a `sandbox.requested` / `provider.created` record whose name or id the query names.
  private static func resolve(_ record: EventRecord, _ query: AuditQuery, _ sandboxes: inout Set<String>, _ providers: inout Set<String>) {
    guard record.type == "sandbox.requested" || record.type == "provider.created",
      let kind = try? GatewayEvent.decode(record).kind
    else { return }
    switch kind {
    case .sandboxRequested(let e) where e.name == query.sandbox || e.id == query.sandbox: sandboxes.insert(e.id)
    case .providerCreated(let e) where e.name == query.provider || e.id == query.provider: providers.insert(e.id)
    default: break
    }
  }
}
