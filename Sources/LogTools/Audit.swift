import EventLog
import Foundation
import Projections

/// Filters of `openshell-replay audit`. Names are resolved to ids by scanning the log, so a
/// sandbox or provider that was deleted (or whose name was reused) is still found.
public struct AuditQuery: Sendable {
  public var sandbox: String?
  public var provider: String?
  public var actor: String?
  /// Event types, exact (`sandbox.ready`) or by prefix (`sandbox.`).
  public var types: [String] = []
  /// Inclusive bounds, ns since the Unix epoch (UTC).
  public var sinceNs: UInt64?
  public var untilNs: UInt64?
  /// Last seq to read (nil = the head); `--salvage` sets it to the record before the first bad one.
  public var throughSeq: UInt64?
  public init() {}
}

/// One line of the audit timeline. Contains no secret: credential values are never decoded.
public struct AuditEntry: Codable, Sendable, Equatable {
  public var seq: UInt64
  public var time: String
  public var timestampNs: UInt64
  public var actor: String
  public var requestID: String
  public var type: String
  public var aggregate: String
  public var summary: String
}

/// Builds the redacted audit timeline.
public enum Audit {
  /// - Throws: `EventLogError` on read failure, `ProjectionError` on an undecodable record.
  public static func timeline(_ log: EventLog, query: AuditQuery) throws -> [AuditEntry] {
    var sandboxIDs: Set<String> = []
    var providerIDs: Set<String> = []
    if query.sandbox != nil || query.provider != nil {
      try log.forEach(from: 1, through: query.throughSeq, filter: EventFilter(types: ["sandbox.requested", "provider.created"])) { record in
        let event = try GatewayEvent.decode(record)
        switch event.kind {
        case .sandboxRequested(let e) where e.name == query.sandbox || e.id == query.sandbox: sandboxIDs.insert(e.id)
        case .providerCreated(let e) where e.name == query.provider || e.id == query.provider: providerIDs.insert(e.id)
        default: break
        }
      }
    }
    var filter = EventFilter.all
    filter.sinceNs = query.sinceNs
    filter.untilNs = query.untilNs
    var entries: [AuditEntry] = []
    try log.forEach(from: 1, through: query.throughSeq, filter: filter) { record in
      if let actor = query.actor, record.actor != actor, !record.actor.contains(actor) { return }
      if !query.types.isEmpty, !query.types.contains(where: { record.type == $0 || ($0.hasSuffix(".") && record.type.hasPrefix($0)) }) { return }
      if query.sandbox != nil || query.provider != nil {
        let agg = record.aggregate
        let matchesSandbox = query.sandbox != nil && ["sandbox", "policy", "settings", "network", "exec", "credentials"].contains(agg.kind) && sandboxIDs.contains(agg.id)
        let matchesProvider = query.provider != nil && agg.kind == "provider" && providerIDs.contains(agg.id)
        if !matchesSandbox && !matchesProvider { return }
      }
      let event = try GatewayEvent.decode(record)
      entries.append(AuditEntry(
        seq: record.seq, time: rfc3339(ns: record.timestampNs), timestampNs: record.timestampNs, actor: record.actor,
        requestID: record.requestID, type: record.type, aggregate: "\(record.aggregate.kind)/\(record.aggregate.id)",
        summary: EventSummary.describe(event)))
    }
    return entries
  }

  /// Renders entries as an aligned text table with a header row.
  public static func table(_ entries: [AuditEntry]) -> String {
    let header = ["SEQ", "TIME", "ACTOR", "TYPE", "AGGREGATE", "DETAILS"]
    let rows = entries.map { [String($0.seq), $0.time, abbreviateFingerprint($0.actor), $0.type, $0.aggregate, $0.summary] }
    return TextTable.render(header: header, rows: rows)
  }
}

/// Shortens `…/sha256:<64 hex>` in an actor to its first 12 hex digits for tables (JSON keeps it whole).
func abbreviateFingerprint(_ actor: String) -> String {
  guard let r = actor.range(of: "/sha256:"), actor.distance(from: r.upperBound, to: actor.endIndex) > 12 else { return actor }
  return String(actor[..<r.upperBound]) + actor[r.upperBound...].prefix(12) + "…"
}

/// RFC 3339 UTC time with millisecond precision for a ns timestamp.
public func rfc3339(ns: UInt64) -> String {
  let seconds = TimeInterval(ns / 1_000_000_000) + TimeInterval(ns % 1_000_000_000) / 1e9
  let f = ISO8601DateFormatter()
  f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
  f.timeZone = TimeZone(identifier: "UTC")
  return f.string(from: Date(timeIntervalSince1970: seconds))
}

/// Parses an RFC 3339 time or a relative duration (`90s`, `5m`, `2h`, `3d` ago) into ns since the epoch.
public func parseTime(_ text: String, now: Date = Date()) -> UInt64? {
  let f = ISO8601DateFormatter()
  f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
  if let d = f.date(from: text) { return UInt64(d.timeIntervalSince1970 * 1e9) }
  f.formatOptions = [.withInternetDateTime]
  if let d = f.date(from: text) { return UInt64(d.timeIntervalSince1970 * 1e9) }
  guard let unit = text.last, let n = Double(text.dropLast()), n >= 0 else { return nil }
  let mult: Double
  switch unit {
  case "s": mult = 1
  case "m": mult = 60
  case "h": mult = 3600
  case "d": mult = 86400
  default: return nil
  }
  let t = now.timeIntervalSince1970 - n * mult
  return t > 0 ? UInt64(t * 1e9) : 0
}

/// Minimal column alignment for CLI tables.
public enum TextTable {
  public static func render(header: [String], rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
      cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
        .joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n")
  }
}
