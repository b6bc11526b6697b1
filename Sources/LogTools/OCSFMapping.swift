import EventLog
import Foundation
import Projections

/// Record → OCSF class and fields; the table in docs/audit-ocsf.md describes exactly this switch.
enum OCSFMapping {
  static func map(_ r: EventRecord, _ event: GatewayEvent, summary: String) -> [[String: Any]] {
    switch event.kind {
    case .accessRefused(let a)?: return [refusal(r, a, summary)]
    case .credentialsDisclosed(let d)?: return [disclosure(r, d, summary)]
    case .execStarted(let s)?:
      var e = OCSFBase.event(r, .processActivity, activity: 1, activityName: "Launch", message: summary)
      e["actor"] = ["user": OCSFBase.user(r.actor)]
      e["device"] = OCSFBase.sandboxDevice(s.sandboxID)
      var process: [String: Any] = ["uid": s.execID, "cmd_line": s.command.joined(separator: " ")]
      if let name = s.command.first { process["name"] = name }
      e["process"] = process
      return [e]
    case .execEnded(let s)?:
      let ok = s.error.isEmpty && s.exitCode == 0
      var e = OCSFBase.event(r, .processActivity, activity: 2, activityName: "Terminate", success: ok, message: summary)
      e["actor"] = ["user": OCSFBase.user(r.actor)]
      e["device"] = OCSFBase.sandboxDevice(s.sandboxID)
      e["process"] = ["uid": s.execID]
      e["duration"] = Int(s.durationMs)
      if s.error.isEmpty { e["exit_code"] = Int(s.exitCode) } else { e["status_detail"] = s.error }
      return [e]
    case .sandboxNetworkDenials(let n)? where !n.denials.isEmpty:
      return n.denials.enumerated().map { denial(r, n, $1, index: $0) }
    case .credentialsSubstituted(let c)? where !c.substitutions.isEmpty:
      return c.substitutions.enumerated().map { substitution(r, c, $1, index: $0) }
    case .sshSessionCreated(let s)?:
      var e = OCSFBase.event(r, .authentication, activity: 3, activityName: "Authentication Ticket", message: summary)
      e["user"] = OCSFBase.user(r.actor)
      var session: [String: Any] = ["uid": s.id, "is_remote": true, "created_time": OCSFBase.milliseconds(r.timestampNs)]
      if s.expiresNs > 0 { session["expiration_time"] = OCSFBase.milliseconds(s.expiresNs) }
      e["session"] = session
      e["service"] = ["name": "ssh", "uid": s.sandboxID]
      e["dst_endpoint"] = ["uid": s.sandboxID, "name": "sandbox:\(s.sandboxID)", "svc_name": "ssh"]
      return [e]
    case .sshSessionRevoked(let s)?:
      var e = OCSFBase.event(r, .authentication, activity: 2, activityName: "Logoff", message: summary)
      e["user"] = OCSFBase.user(r.actor)
      e["session"] = ["uid": s.id, "expiration_reason": "revoked"]
      e["service"] = ["name": "ssh"]
      return [e]
    case .sshTunnelOpened(let t)?:
      var e = OCSFBase.event(r, .sshActivity, activity: 1, activityName: "Open", message: summary)
      e["dst_endpoint"] = ["uid": t.sandboxID, "name": "sandbox:\(t.sandboxID)", "svc_name": t.target]
      e["unmapped"] = ["tunnel_id": t.tunnelID, "ssh_session_id": t.sessionID, "actor": r.actor]
      return [e]
    case .sshTunnelClosed(let t)?:
      var e = OCSFBase.event(r, .sshActivity, activity: 2, activityName: "Close", message: summary)
      e["dst_endpoint"] = ["uid": t.sandboxID, "name": "sandbox:\(t.sandboxID)"]
      // Seen from the client: bytes out went to the sandbox, bytes in came from it.
      e["traffic"] = [
        "bytes_out": Int(t.bytesToSandbox), "bytes_in": Int(t.bytesFromSandbox), "bytes": Int(t.bytesToSandbox + t.bytesFromSandbox),
      ]
      e["duration"] = Int(t.durationMs)
      if !t.reason.isEmpty { e["status_detail"] = t.reason }
      e["unmapped"] = ["tunnel_id": t.tunnelID, "ssh_session_id": t.sessionID, "actor": r.actor]
      return [e]
    case .supervisorConnected(let s)?: return [supervisorConnected(r, s, summary)]
    case .supervisorDisconnected(let s)?: return [supervisorDisconnected(r, s, summary)]
    default:
      return [api(r, summary)]
    }
  }

  /// A supervisor's session to the gateway began: Authentication Logon (the supervisor authenticated with its
  /// sandbox certificate or token and holds a session), `session.uid` = the session id.
  static func supervisorConnected(_ r: EventRecord, _ s: Openshell_Events_V1_SupervisorConnected, _ summary: String) -> [String: Any] {
    var e = OCSFBase.event(r, .authentication, activity: 1, activityName: "Logon", message: summary)
    e["user"] = OCSFBase.user(s.identity)
    e["session"] = ["uid": s.sessionID, "is_remote": true, "created_time": OCSFBase.milliseconds(s.connectedNs)]
    e["service"] = ["name": "openshell.v1.OpenShell/ConnectSupervisor", "uid": s.sandboxID]
    e["src_endpoint"] = OCSFBase.endpoint(peer: s.peer)
    e["dst_endpoint"] = ["name": "openshell-gateway", "svc_name": "openshell.v1.OpenShell/ConnectSupervisor"]
    var unmapped: [String: Any] = ["sandbox_id": s.sandboxID, "instance_id": s.instanceID, "epoch": Int(s.epoch)]
    unmapped["auth"] = s.certificateSha256.isEmpty ? "sandbox token" : "client certificate sha256:\(s.certificateSha256)"
    if s.unrecordedSessions > 0 { unmapped["unrecorded_sessions"] = Int(s.unrecordedSessions) }
    e["unmapped"] = unmapped
    return e
  }

  /// That session ended: Authentication Logoff with `duration` (ms) and the reason in `status_detail`; a summary
  /// of sessions not recorded one by one (reconnect loop) has no session and `count` = how many.
  static func supervisorDisconnected(_ r: EventRecord, _ s: Openshell_Events_V1_SupervisorDisconnected, _ summary: String) -> [String: Any] {
    var e = OCSFBase.event(r, .authentication, activity: 2, activityName: "Logoff", message: summary)
    e["user"] = OCSFBase.user("sandbox:\(s.sandboxID)")
    if s.sessionID.isEmpty {
      e["count"] = Int(s.unrecordedSessions)
    } else {
      e["session"] = ["uid": s.sessionID, "is_remote": true]
    }
    e["service"] = ["name": "openshell.v1.OpenShell/ConnectSupervisor", "uid": s.sandboxID]
    if !s.peer.isEmpty { e["src_endpoint"] = OCSFBase.endpoint(peer: s.peer) }
    e["duration"] = Int(s.durationMs)
    e["status_detail"] = s.reason
    e["unmapped"] = ["sandbox_id": s.sandboxID, "instance_id": s.instanceID]
    return e
  }

  /// A refused call: UNAUTHENTICATED is a failed Authentication (Logon); any other refusal (PERMISSION_DENIED)
  /// a failed Authorize Session. `count` is the number of calls the aggregated window holds.
  static func refusal(_ r: EventRecord, _ a: Openshell_Events_V1_AccessRefused, _ summary: String) -> [String: Any] {
    var e: [String: Any]
    if a.code == "UNAUTHENTICATED" {
      e = OCSFBase.event(r, .authentication, activity: 1, activityName: "Logon", severity: .medium, success: false, message: summary)
      e["service"] = ["name": a.rpc]
    } else {
      e = OCSFBase.event(r, .authorizeSession, activity: 99, activityName: "Other", severity: .medium, success: false, message: summary)
      // The class requires exactly one of privileges and group: the privilege asked for (and refused) is the RPC.
      e["privileges"] = [a.rpc]
    }
    // Older records kept an unverified client's claim in the identity, as presented: escaped and capped here.
    e["user"] = OCSFBase.user(ClaimedText.displayIdentity(a.identity))
    e["src_endpoint"] = OCSFBase.endpoint(peer: a.peer)
    // Samples of the window (bounded by the aggregator): what unverified clients claimed, how many addresses.
    var unmapped: [String: Any] = [:]
    if !a.claimedSubject.isEmpty {
      unmapped["claimed_subject"] = a.claimedSubject
      unmapped["distinct_subjects"] = Int(a.distinctSubjects)
    }
    if a.distinctPeers > 0 { unmapped["distinct_peers"] = Int(a.distinctPeers) }
    if !unmapped.isEmpty { e["unmapped"] = unmapped }
    e["dst_endpoint"] = ["name": "openshell-gateway", "svc_name": a.rpc]
    e["count"] = Int(a.count)
    e["status_code"] = a.code
    e["status_detail"] = a.reason
    e["start_time"] = OCSFBase.milliseconds(a.firstNs)
    e["end_time"] = OCSFBase.milliseconds(a.lastNs)
    return e
  }

  /// A credential disclosure: an API Activity Read by the recipient of the providers' keys (names only).
  static func disclosure(_ r: EventRecord, _ d: Openshell_Events_V1_CredentialsDisclosed, _ summary: String) -> [String: Any] {
    var e = OCSFBase.event(r, .apiActivity, activity: 2, activityName: "Read", severity: .low, message: summary)
    e["actor"] = ["user": OCSFBase.user(d.recipient)]
    e["api"] = apiObject(r, operation: d.rpc)
    e["src_endpoint"] = OCSFBase.endpoint(actor: d.recipient)
    e["resources"] = d.providers.map { ["type": "provider", "name": $0, "data": ["credential_keys": d.keys]] as [String: Any] }
    if !d.sandboxID.isEmpty { e["unmapped"] = ["sandbox_id": d.sandboxID] }
    return e
  }

  /// A proxy denial (one destination of a `sandbox.network_denials` report): Network Activity Refuse with the
  /// security_control profile (action Denied, disposition Blocked); `count` connections in the report's window.
  static func denial(_ r: EventRecord, _ n: Openshell_Events_V1_SandboxNetworkDenials, _ d: Openshell_Events_V1_NetworkDenial, index: Int) -> [String: Any] {
    let who = d.binary.isEmpty ? "(unidentified)" : d.binary
    var e = OCSFBase.event(
      r, .networkActivity, activity: 5, activityName: "Refuse", severity: .low, success: false,
      message: "network denied \(d.host):\(d.port) by \(who) ×\(d.count): \(d.reason)", index: index, profiles: ["security_control"])
    e["dst_endpoint"] = ["hostname": d.host, "port": Int(d.port)]
    e["src_endpoint"] = ["uid": n.id, "name": "sandbox:\(n.id)"]
    if !d.binary.isEmpty { e["app_name"] = d.binary }
    e["count"] = Int(d.count)
    e["status_detail"] = d.reason
    e["action_id"] = 2
    e["action"] = "Denied"
    e["disposition_id"] = 2
    e["disposition"] = "Blocked"
    e["start_time"] = OCSFBase.milliseconds(n.firstSeenNs)
    e["end_time"] = OCSFBase.milliseconds(n.lastSeenNs)
    if !d.binarySha256.isEmpty { e["unmapped"] = ["binary_sha256": d.binarySha256] }
    return e
  }

  /// A credential placeholder substitution (one key, destination and binary of an `audit.credentials_substituted`
  /// report): Network Activity Traffic with the security_control profile — the proxy allowed the requests and
  /// modified them by putting the key's value in (action Modified, disposition Allowed); `count` requests in
  /// the report's window. The key and its provider are names, never the value.
  static func substitution(
    _ r: EventRecord, _ c: Openshell_Events_V1_CredentialsSubstituted, _ s: Openshell_Events_V1_CredentialSubstitution, index: Int
  ) -> [String: Any] {
    let who = s.binary.isEmpty ? "(unidentified)" : s.binary
    let destination = s.host.isEmpty ? "(other destinations)" : "\(s.host):\(s.port)"
    var e = OCSFBase.event(
      r, .networkActivity, activity: 6, activityName: "Traffic", severity: .low,
      message: "credential \(s.key) substituted → \(destination) by \(who) ×\(s.count)", index: index, profiles: ["security_control"])
    var dst: [String: Any] = [:]
    if !s.host.isEmpty { dst = ["hostname": s.host, "port": Int(s.port)] } else { dst = ["name": "(other destinations)"] }
    e["dst_endpoint"] = dst
    e["src_endpoint"] = ["uid": c.sandboxID, "name": "sandbox:\(c.sandboxID)"]
    if !s.binary.isEmpty { e["app_name"] = s.binary }
    e["count"] = Int(s.count)
    e["action_id"] = 4
    e["action"] = "Modified"
    e["disposition_id"] = 1
    e["disposition"] = "Allowed"
    e["start_time"] = OCSFBase.milliseconds(c.firstSeenNs)
    e["end_time"] = OCSFBase.milliseconds(c.lastSeenNs)
    var unmapped: [String: Any] = ["credential_key": s.key]
    if !s.provider.isEmpty { unmapped["provider"] = s.provider }
    e["unmapped"] = unmapped
    return e
  }

  /// Every other record: a control-plane mutation or lifecycle fact as API Activity (Create, Update, Delete,
  /// or Other for what the gateway itself observed), on the record's aggregate as the resource.
  static func api(_ r: EventRecord, _ summary: String) -> [String: Any] {
    let (activity, name) = apiActivity(r.type)
    let failed = r.type == "sandbox.failed" || r.type == "policy.revision_failed"
    var e = OCSFBase.event(
      r, .apiActivity, activity: activity, activityName: name, severity: failed ? .medium : .informational, success: !failed, message: summary)
    e["actor"] = ["user": OCSFBase.user(r.actor)]
    e["api"] = apiObject(r, operation: r.type)
    e["src_endpoint"] = OCSFBase.endpoint(actor: r.actor)
    e["resources"] = [["type": r.aggregate.kind, "uid": r.aggregate.id]]
    return e
  }

  static func apiObject(_ r: EventRecord, operation: String) -> [String: Any] {
    ["operation": operation, "service": ["name": "openshell.gateway"], "request": ["uid": r.requestID.isEmpty ? "seq-\(r.seq)" : r.requestID]]
  }

  /// API Activity ids by event type (docs/audit-ocsf.md): 1 Create, 3 Update, 4 Delete, 99 Other.
  static func apiActivity(_ type: String) -> (Int, String) {
    if creates.contains(type) { return (1, "Create") }
    if updates.contains(type) { return (3, "Update") }
    if deletes.contains(type) { return (4, "Delete") }
    return (99, "Other")
  }

  static let creates: Set<String> = [
    "gateway.initialized", "certificate.issued", "workspace.created", "template.created", "sandbox.requested",
    "provider.created", "policy.revision_submitted", "inference.bundle_published",
  ]
  static let updates: Set<String> = [
    "gateway.configured", "provider.updated", "provider.credential_rotated", "sandbox.provider_attached",
    "sandbox.provider_detached", "sandbox.stopping", "sandbox.starting", "policy.global_set", "setting.set",
    "inference.route_set",
  ]
  static let deletes: Set<String> = [
    "workspace.deleted", "template.deleted", "sandbox.deleting", "sandbox.deleted", "provider.deleted",
    "policy.global_deleted", "setting.deleted", "inference.route_deleted",
  ]
}
