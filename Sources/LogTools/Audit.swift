import EventLog
import Foundation
import Projections

/// Filters of `openshell-replay audit`. Names are resolved to ids by scanning the log, so a
/// sandbox or provider that was deleted (or whose name was reused) is still found.
public struct AuditQuery: Sendable {
  /// Sandbox name or id; nil = every sandbox.
  public var sandbox: String?
  /// Provider name or id; nil = every provider.
  public var provider: String?
  /// Actor identity, exact or as a substring; nil = every actor.
  public var actor: String?
  /// Event types, exact (`sandbox.ready`) or by prefix (`sandbox.`).
  public var types: [String] = []
  /// Inclusive bounds, ns since the Unix epoch (UTC).
  public var sinceNs: UInt64?
  /// Inclusive upper bound, ns since the Unix epoch (UTC); nil = no bound.
  public var untilNs: UInt64?
  /// Last seq to read (nil = the head); `--salvage` sets it to the record before the first bad one.
  public var throughSeq: UInt64?
  /// A query that matches every record.
  public init() {}
}

/// One line of the audit timeline. Contains no secret: credential values are never decoded.
public struct AuditEntry: Codable, Sendable, Equatable {
  /// Sequence number of the record.
  public var seq: UInt64
  /// Record time in RFC 3339 UTC with milliseconds (``rfc3339(ns:)``).
  public var time: String
  /// Record time, ns since the Unix epoch (UTC).
  public var timestampNs: UInt64
  /// Authenticated identity that caused the event, or `system`.
  public var actor: String
  /// Client request id; empty when none.
  public var requestID: String
  /// Dotted event type, e.g. `sandbox.ready`.
  public var type: String
  /// `kind/id` of the record's aggregate, e.g. `sandbox/3f2a…`.
  public var aggregate: String
  /// One-line description of the event (``EventSummary/describe(_:)``), without secret values.
  public var summary: String
  /// The record's OCSF events (JSON objects, ``OCSF``) when they were asked for; nil otherwise.
  public var ocsf: [String]?

  /// An entry with every field given.
  public init(
    seq: UInt64, time: String, timestampNs: UInt64, actor: String, requestID: String, type: String, aggregate: String, summary: String, ocsf: [String]? = nil
  ) {
    self.seq = seq
    self.time = time
    self.timestampNs = timestampNs
    self.actor = actor
    self.requestID = requestID
    self.type = type
    self.aggregate = aggregate
    self.summary = summary
    self.ocsf = ocsf
  }
}

/// Builds the redacted audit timeline.
public enum Audit {
  /// The matching entries with seq in `fromSeq…query.throughSeq`, at most `limit` of them; with `ocsf`, each
  /// entry also carries its OCSF events. With `requireKnownNames`, a sandbox or provider filter naming
  /// something the log never held is an error rather than an empty timeline.
  /// - Throws: `EventLogError` on read failure, `ProjectionError` on an undecodable record,
  ///   ``AuditUnknownName`` (only with `requireKnownNames`).
  public static func timeline(
    _ log: EventLog, query: AuditQuery, fromSeq: UInt64 = 1, limit: Int = .max, ocsf: Bool = false, requireKnownNames: Bool = false
  ) throws -> [AuditEntry] {
    var matcher = try AuditMatcher(log, query: query)
    if requireKnownNames, let name = matcher.unknownName { throw AuditUnknownName(name: name) }
    matcher.includeOCSF = ocsf
    var entries: [AuditEntry] = []
    guard limit > 0 else { return entries }
    var reader = log.read(from: fromSeq, through: query.throughSeq, filter: matcher.logFilter)
    while let record = try reader.next() {
      guard let entry = try matcher.entry(record) else { continue }
      entries.append(entry)
      if entries.count >= limit { break }
    }
    return entries
  }

  /// Renders entries as an aligned text table with a header row.
  public static func table(_ entries: [AuditEntry]) -> String {
    let header = ["SEQ", "TIME", "ACTOR", "TYPE", "AGGREGATE", "DETAILS"]
    let rows = entries.map {
      [String($0.seq), $0.time, abbreviateFingerprint(ClaimedText.displayIdentity($0.actor)), $0.type, $0.aggregate, $0.summary]
    }
    return TextTable.render(header: header, rows: rows)
  }
}

/// Shortens `…/sha256:<64 hex>` in an actor to its first 12 hex digits for tables (JSON keeps it whole).
func abbreviateFingerprint(_ actor: String) -> String {
  guard let r = actor.range(of: "/sha256:"), actor.distance(from: r.upperBound, to: actor.endIndex) > 12 else { return actor }
  return String(actor[..<r.upperBound]) + actor[r.upperBound...].prefix(12) + "…"
}

/// RFC 3339 UTC time with millisecond precision (truncated) for a ns timestamp, e.g.
/// `2026-12-05T22:13:20.001Z`. Formatted by hand (gmtime_r): a Foundation date formatter per call cost more
/// than everything else of an audit entry (the WatchEvents path renders one per record).
public func rfc3339(ns: UInt64) -> String {
  var seconds = time_t(ns / 1_000_000_000)
  var parts = tm()
  gmtime_r(&seconds, &parts)
  func pad(_ v: Int32, _ width: Int) -> String {
    let s = String(v)
    return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
  }
  let ms = Int32(ns / 1_000_000 % 1000)
  return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
    + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(ms, 3))Z"
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
  /// Pads every column but the last to its widest cell, separates columns by two spaces, header row first;
  /// lines joined by `\n`.
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

/// A query names a sandbox or provider that no record of the log introduced (``AuditMatcher/unknownName``):
/// thrown by ``Audit/timeline(_:query:fromSeq:limit:ocsf:requireKnownNames:)`` when asked to.
public struct AuditUnknownName: Error, CustomStringConvertible {
  /// E.g. `sandbox "nosuch"`.
  public let name: String
  /// `sandbox "nosuch" not found: no record of the log names it`.
  public var description: String { "\(name) not found: no record of the log names it" }
}
