import EventLog
import Foundation
import Projections

/// OCSF (Open Cybersecurity Schema Framework) rendering of audit records, for SIEM pipelines
/// (`openshell audit -o ocsf`, `openshell-replay audit -o ocsf`, the OTLP log export; issue 12,
/// OpenShell: enforcement-and-ssh.md §2, upstream #2762/#2892).
///
/// Each record becomes one OCSF event (a `sandbox.network_denials` record one per denied destination)
/// of the classes in docs/audit-ocsf.md, which is the mapping table. Events validate against the OCSF
/// 1.5.0 JSON schema (Tests/audit-tools/validate_ocsf.py, checked for every class in LogToolsTests.OCSFTests).
///
/// Like the rest of the audit trail, an OCSF event never holds a secret: credential values are sealed in the
/// log and never decoded here; key names, provider names and the redacted summary are all it carries.
public enum OCSF {
  /// The OCSF schema version the events declare (`metadata.version`) and are validated against.
  public static let schemaVersion = "1.5.0"

  /// The OCSF events of one record, as JSON objects with sorted keys (one per line in `-o ocsf`).
  /// - Throws: `ProjectionError` when the payload cannot be decoded.
  public static func jsonLines(_ record: EventRecord) throws -> [String] {
    try events(record, GatewayEvent.decode(record)).map(encode)
  }

  /// The OCSF events (JSON objects) of `record`, whose decoded payload is `event`.
  public static func events(_ record: EventRecord, _ event: GatewayEvent) -> [[String: Any]] {
    OCSFMapping.map(record, event, summary: EventSummary.describe(event))
  }

  /// One JSON object, sorted keys, no escaped slashes.
  public static func encode(_ object: [String: Any]) -> String {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else {
      return "{}"  // unreachable: the mapping builds only strings, integers, booleans, arrays and objects
    }
    return String(decoding: data, as: UTF8.self)
  }
}

/// An OCSF event class used by the mapping (uid, caption, category).
struct OCSFClass {
  let uid: Int
  let name: String
  let categoryUID: Int
  let categoryName: String

  static let processActivity = OCSFClass(uid: 1007, name: "Process Activity", categoryUID: 1, categoryName: "System Activity")
  static let authentication = OCSFClass(uid: 3002, name: "Authentication", categoryUID: 3, categoryName: "Identity & Access Management")
  static let authorizeSession = OCSFClass(uid: 3003, name: "Authorize Session", categoryUID: 3, categoryName: "Identity & Access Management")
  static let networkActivity = OCSFClass(uid: 4001, name: "Network Activity", categoryUID: 4, categoryName: "Network Activity")
  static let sshActivity = OCSFClass(uid: 4007, name: "SSH Activity", categoryUID: 4, categoryName: "Network Activity")
  static let apiActivity = OCSFClass(uid: 6003, name: "API Activity", categoryUID: 6, categoryName: "Application Activity")
}

/// OCSF `severity_id` values (captions in ``name``).
enum OCSFSeverity: Int {
  case informational = 1
  case low = 2
  case medium = 3
  case high = 4
  var name: String {
    switch self {
    case .informational: "Informational"
    case .low: "Low"
    case .medium: "Medium"
    case .high: "High"
    }
  }
}

/// The fields every mapped event shares, and the OCSF objects built from record headers.
enum OCSFBase {
  /// The base event: classification, time (ms), severity, status, message and metadata. `index` tells apart
  /// the events of one record (metadata.uid `seq` or `seq.index`).
  static func event(
    _ r: EventRecord, _ c: OCSFClass, activity: Int, activityName: String, severity: OCSFSeverity = .informational,
    success: Bool = true, message: String, index: Int? = nil, profiles: [String] = []
  ) -> [String: Any] {
    var metadata: [String: Any] = [
      "version": OCSF.schemaVersion,
      "product": ["name": "OpenShell gateway", "vendor_name": "OpenShell", "lang": "swift"],
      "uid": index.map { "\(r.seq).\($0)" } ?? "\(r.seq)",
      "sequence": Int(r.seq),
      "event_code": r.type,
      "log_name": "openshell-event-log",
      "log_provider": "openshell",
    ]
    if !r.requestID.isEmpty { metadata["correlation_uid"] = r.requestID }
    if !profiles.isEmpty { metadata["profiles"] = profiles }
    return [
      "class_uid": c.uid, "class_name": c.name, "category_uid": c.categoryUID, "category_name": c.categoryName,
      "activity_id": activity, "activity_name": activityName,
      "type_uid": c.uid * 100 + activity, "type_name": "\(c.name): \(activityName)",
      "time": milliseconds(r.timestampNs),
      "severity_id": severity.rawValue, "severity": severity.name,
      "status_id": success ? 1 : 2, "status": success ? "Success" : "Failure",
      "message": message,
      "metadata": metadata,
    ]
  }

  static func milliseconds<T: BinaryInteger>(_ ns: T) -> Int { Int(ns / 1_000_000) }

  /// An OCSF `user` for an actor string of the log (CallerIdentity.actor): `operator:CN=<cn>/sha256:<fp>`
  /// (type Admin), `user:CN=…` (User), `sandbox:<id>` (Other: Sandbox), `system` (System), else Unknown.
  /// `uid` is the whole actor string, so that events join on it exactly.
  static func user(_ actor: String) -> [String: Any] {
    var u: [String: Any] = ["uid": actor]
    func commonName() -> String {
      guard let start = actor.range(of: "CN=") else { return actor }
      let rest = actor[start.upperBound...]
      return String(rest.prefix { $0 != "/" })
    }
    if actor.hasPrefix("operator:") {
      u["name"] = commonName(); u["type_id"] = 2; u["type"] = "Admin"
    } else if actor.hasPrefix("user:") {
      u["name"] = commonName(); u["type_id"] = 1; u["type"] = "User"
    } else if actor.hasPrefix("sandbox:") {
      u["name"] = actor; u["type_id"] = 99; u["type"] = "Sandbox"
    } else if actor == "system" {
      u["name"] = "system"; u["type_id"] = 3; u["type"] = "System"
    } else {
      u["name"] = actor.isEmpty ? "unknown" : actor; u["type_id"] = 0; u["type"] = "Unknown"
    }
    return u
  }

  /// The source endpoint of a caller whose address is not recorded (successful calls keep no peer
  /// address): named after the caller; a sandbox's uid is its id; the system is the gateway itself.
  static func endpoint(actor: String) -> [String: Any] {
    if actor.hasPrefix("sandbox:") { return ["name": actor, "uid": String(actor.dropFirst("sandbox:".count))] }
    if actor == "system" { return ["name": "openshell-gateway"] }
    return ["name": user(actor)["name"] as? String ?? "unknown"]
  }

  /// A gRPC peer (`ipv4:127.0.0.1:5555`, `ipv6:[::1]:5555`, `unix:/path`) as an OCSF network endpoint;
  /// anything else is kept as the endpoint's name.
  static func endpoint(peer: String) -> [String: Any] {
    var rest = Substring(peer)
    if rest.hasPrefix("ipv4:") || rest.hasPrefix("ipv6:") {
      rest = rest.dropFirst(5)
      guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]) else { return ["name": peer] }
      var ip = rest[..<colon]
      if ip.hasPrefix("["), ip.hasSuffix("]") { ip = ip.dropFirst().dropLast() }
      return ["ip": String(ip), "port": port]
    }
    return ["name": peer.isEmpty ? "unknown" : peer]
  }

  /// An OCSF `device` for a sandbox (type Virtual), by id.
  static func sandboxDevice(_ id: String) -> [String: Any] {
    ["type_id": 6, "type": "Virtual", "uid": id, "name": "sandbox:\(id)"]
  }
}
