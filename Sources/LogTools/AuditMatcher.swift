import EventLog
import Foundation
import Projections

/// Decides which records an ``AuditQuery`` selects and renders them as ``AuditEntry`` values; used by
/// `openshell-replay audit` and by the gateway's audit API (history and live).
///
/// Sandbox and provider filters take a name or an id. Names are resolved to ids by scanning the log
/// once at creation (so a deleted object, or one whose name was reused, is still found), and records
/// passed to ``select(_:)`` later keep extending the set (a sandbox created under that name while a
/// watch runs is followed too). Whether a record belongs to the sandbox or provider comes from the event
/// itself (``GatewayEvent/sandboxReference``, ``GatewayEvent/providerReferences``), not from its aggregate:
/// a sandbox's `certificate.issued` and `ssh.session_created` records are in other aggregates. An
/// `ssh.session_revoked` names only its session, so it belongs to the sandbox of that session.
public struct AuditMatcher: Sendable {
  /// The filters this matcher applies.
  public let query: AuditQuery
  /// Whether ``entry(_:)`` also renders the record's OCSF events (``AuditEntry/ocsf``).
  public var includeOCSF = false
  private var sandboxIDs: Set<String> = []
  /// Ids and names of the providers the query names.
  private var providerRefs: Set<String> = []
  /// SSH sessions of the selected sandboxes (their revocations name only the session).
  private var sessionIDs: Set<String> = []

  /// Record types that extend the resolved sets.
  static let resolvingTypes: Set<String> = ["sandbox.requested", "provider.created", "ssh.session_created"]

  /// - Throws: `EventLogError`, `ProjectionError` while resolving names.
  public init(_ log: EventLog, query: AuditQuery) throws {
    self.query = query
    guard isScoped else { return }
    var events: [GatewayEvent] = []
    try log.forEach(from: 1, through: query.throughSeq, filter: EventFilter(types: Self.resolvingTypes)) { record in
      events.append(try GatewayEvent.decode(record))
    }
    for event in events { observe(event) }
  }

  /// The sandbox or provider the query names when no record of the log (up to its `throughSeq`) introduced
  /// it, e.g. `sandbox "nosuch"`; nil when every name was seen. A deleted sandbox or provider was seen (its
  /// history is what an audit is for): only a name the log never held is unknown.
  public var unknownName: String? {
    if let sandbox = query.sandbox, sandboxIDs.isEmpty { return "sandbox \"\(sandbox)\"" }
    if let provider = query.provider, providerRefs.isEmpty { return "provider \"\(provider)\"" }
    return nil
  }

  /// The header-only prefilter for log reads (time bounds); the rest is checked in ``select(_:)``.
  public var logFilter: EventFilter {
    EventFilter(sinceNs: query.sinceNs, untilNs: query.untilNs)
  }

  /// Whether the query names a sandbox or a provider (then every candidate record is decoded).
  var isScoped: Bool { query.sandbox != nil || query.provider != nil }

  /// The decoded event if the query selects `record`, else nil. The payload is decoded at most once, and
  /// not at all for a record the header (time, actor, type) already rules out.
  /// - Throws: `ProjectionError` when the payload cannot be decoded.
  public mutating func select(_ record: EventRecord) throws -> GatewayEvent? {
    var decoded: GatewayEvent?
    if isScoped, Self.resolvingTypes.contains(record.type) {
      let event = try GatewayEvent.decode(record)
      observe(event)
      decoded = event
    }
    guard headerMatches(record) else { return nil }
    let event = try decoded ?? GatewayEvent.decode(record)
    if isScoped {
      var inSandbox = false
      if query.sandbox != nil {
        if let id = event.sandboxReference {
          inSandbox = sandboxIDs.contains(id)
        } else if case .sshSessionRevoked(let e) = event.kind {
          inSandbox = sessionIDs.contains(e.id)
        }
      }
      let inProvider = query.provider != nil && event.providerReferences.contains(where: providerRefs.contains)
      if !inSandbox && !inProvider { return nil }
    }
    return event
  }

  /// Whether the query selects `record` judging by its header alone (time bounds, actor, type), or nil when
  /// the query names a sandbox or a provider (then only ``select(_:)``, which decodes, decides). A record
  /// this selects is selected by ``select(_:)`` too if its payload decodes.
  public func selectsByHeader(_ record: EventRecord) -> Bool? {
    isScoped ? nil : headerMatches(record)
  }

  /// ``selectsByHeader(_:)`` for a record given by its header fields (a borrowed record of the watch's
  /// history, issue 12).
  public func selectsByHeader(timestampNs: UInt64, type: String, actor: String) -> Bool? {
    isScoped ? nil : headerMatches(timestampNs: timestampNs, type: type, actor: actor)
  }

  private func headerMatches(_ record: EventRecord) -> Bool {
    headerMatches(timestampNs: record.timestampNs, type: record.type, actor: record.actor)
  }

  /// Time bounds (since inclusive, until exclusive), actor (equal or containing), type (equal, or a prefix
  /// ending in ".").
  private func headerMatches(timestampNs: UInt64, type: String, actor: String) -> Bool {
    if let s = query.sinceNs, timestampNs < s { return false }
    if let u = query.untilNs, timestampNs >= u { return false }
    if let a = query.actor, actor != a, !actor.contains(a) { return false }
    if !query.types.isEmpty, !query.types.contains(where: { type == $0 || ($0.hasSuffix(".") && type.hasPrefix($0)) }) {
      return false
    }
    return true
  }

  /// The entry for `record` if the query selects it, else nil.
  /// - Throws: `ProjectionError` when the payload cannot be decoded.
  public mutating func entry(_ record: EventRecord) throws -> AuditEntry? {
    guard let event = try select(record) else { return nil }
    return AuditEntry(
      seq: record.seq, time: rfc3339(ns: record.timestampNs), timestampNs: record.timestampNs, actor: record.actor,
      requestID: record.requestID, type: record.type, aggregate: "\(record.aggregate.kind)/\(record.aggregate.id)",
      summary: EventSummary.describe(event), ocsf: includeOCSF ? OCSF.events(record, event).map(OCSF.encode) : nil)
  }

  /// Adds the sandbox, provider or SSH session a resolving record (``resolvingTypes``) introduces, when it is
  /// one the query names.
  private mutating func observe(_ event: GatewayEvent) {
    switch event.kind {
    case .sandboxRequested(let e) where query.sandbox != nil && (e.name == query.sandbox || e.id == query.sandbox):
      sandboxIDs.insert(e.id)
    case .providerCreated(let e) where query.provider != nil && (e.name == query.provider || e.id == query.provider):
      providerRefs.insert(e.id)
      providerRefs.insert(e.name)
    case .sshSessionCreated(let e) where sandboxIDs.contains(e.sandboxID):
      sessionIDs.insert(e.id)
    default: break
    }
  }
}
