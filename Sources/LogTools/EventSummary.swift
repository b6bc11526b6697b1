import Foundation
import Projections

/// One-line, human-readable descriptions of events for the audit timeline. Secrets are never
/// rendered: sealed credential values appear only as their key names.
public enum EventSummary {
  /// One line describing `event` for the audit table (e.g. `sandbox default/demo id …`); empty for an
  /// unset kind. Credentials appear by key name only, never by value.
  public static func describe(_ event: GatewayEvent) -> String {
    guard let kind = event.kind else { return "" }
    switch kind {
    case .gatewayInitialized(let e): return "gateway \(e.gatewayName) initialised (id \(e.gatewayID), version \(e.serverVersion))"
    case .gatewayConfigured(let e):
      var s = "port \(e.port), auth \(e.authMode)"
      if e.gpu { s += ", gpu" }
      if !e.registryUsername.isEmpty { s += ", registry user \(e.registryUsername)" }
      if !e.gatewayHosts.isEmpty { s += ", hosts \(e.gatewayHosts.joined(separator: ","))" }
      return s
    case .certificateIssued(let e): return "\(e.role) certificate \(e.subject) sha256:\(e.fingerprintSha256.prefix(16))…"
    case .workspaceCreated(let e): return "workspace \(e.name)\(labels(e.labels))"
    case .workspaceDeleted(let e): return "workspace \(e.name)"
    case .sandboxTemplateCreated(let e): return "template \(e.workspace)/\(e.name)"
    case .sandboxTemplateDeleted(let e): return "template \(e.workspace)/\(e.name)"
    case .sandboxRequested(let e):
      var s = "sandbox \(e.workspace)/\(e.name) id \(e.id)\(labels(e.labels))"
      if !e.templateName.isEmpty { s += " from template \(e.templateName)" }
      if !e.providers.isEmpty { s += " providers \(e.providers.joined(separator: ","))" }
      return s
    case .sandboxProvisioning(let e): return "driver \(e.driver)\(e.message.isEmpty ? "" : ": \(e.message)")"
    case .sandboxReady: return "ready"
    case .sandboxFailed(let e): return "\(e.reason): \(e.message)"
    case .sandboxStopping(let e): return e.reason.isEmpty ? "stopping" : "stopping (\(e.reason))"
    case .sandboxStopped: return "stopped"
    case .sandboxStarting: return "starting"
    case .sandboxDeleting: return "deleting"
    case .sandboxDeleted: return "deleted"
    case .sandboxMainProcessExited(let e): return "main process exited with code \(e.exitCode)\(e.signal != 0 ? " (signal \(e.signal))" : "")"
    case .sandboxConditionSet(let e): return "condition \(e.type)=\(e.status) \(e.reason): \(e.message)"
    case .sandboxNetworkDenials(let e):
      let total = e.denials.reduce(0) { $0 + Int($1.count) }
      let items = e.denials.map { "\($0.host):\($0.port) by \($0.binary.isEmpty ? "(unidentified)" : $0.binary) ×\($0.count): \($0.reason)" }
      return "network denied \(total) request(s): " + items.joined(separator: "; ")
    case .providerCreated(let e):
      return "provider \(e.workspace)/\(e.name) type \(e.type) credentials [\(e.credentials.map(\.key).sorted().joined(separator: ","))] (values sealed)"
    case .providerUpdated(let e):
      var parts: [String] = []
      if !e.setConfig.isEmpty { parts.append("config set \(e.setConfig.keys.sorted().joined(separator: ","))") }
      if !e.removedConfig.isEmpty { parts.append("config removed \(e.removedConfig.joined(separator: ","))") }
      if !e.setCredentials.isEmpty { parts.append("credentials set \(e.setCredentials.map(\.key).sorted().joined(separator: ",")) (values sealed)") }
      if !e.removedCredentials.isEmpty { parts.append("credentials removed \(e.removedCredentials.joined(separator: ","))") }
      return parts.joined(separator: "; ")
    case .providerCredentialRotated(let e): return "credential \(e.credential.key) rotated (value sealed)"
    case .providerDeleted(let e): return "provider \(e.workspace)/\(e.name) deleted; data key destroyed"
    case .sandboxProviderAttached(let e): return "provider \(e.provider) attached"
    case .sandboxProviderDetached(let e): return "provider \(e.provider) detached"
    case .policyRevisionSubmitted(let e): return "policy v\(e.version) submitted (sha256:\(e.contentSha256.prefix(12)))"
    case .policyRevisionLoaded(let e): return "policy v\(e.version) loaded"
    case .policyRevisionFailed(let e): return "policy v\(e.version) failed: \(e.message)"
    case .policyRevisionSuperseded(let e): return "policy v\(e.version) superseded by v\(e.supersededBy)"
    case .globalPolicySet(let e): return "global policy v\(e.version) set (sha256:\(e.contentSha256.prefix(12)))"
    case .globalPolicyDeleted(let e): return "global policy v\(e.version) deleted"
    case .settingSet(let e): return "\(e.scope): \(e.key) = \(e.value)"
    case .settingDeleted(let e): return "\(e.scope): \(e.key) deleted"
    case .inferenceRouteSet(let e):
      // An unset timeout (0) is the gateway's default, shown as `openshell inference get` shows it.
      let timeout = e.timeoutSeconds == 0 ? "60s (default)" : "\(e.timeoutSeconds)s"
      return "route \(e.route) → \(e.provider) model \(e.model) timeout \(timeout)\(e.verified ? "" : " (not verified)")"
    case .inferenceRouteDeleted(let e): return "route \(e.route) deleted"
    case .inferenceBundlePublished(let e): return "bundle \(e.revision) routes \(e.routes.joined(separator: ","))"
    case .sshSessionCreated(let e):
      let expiry = e.expiresNs == 0 ? "never expires" : "expires \(rfc3339(ns: UInt64(max(0, e.expiresNs))))"
      return "ssh session \(e.id) for sandbox \(e.sandboxID) (\(expiry), host key \(e.hostKeyFingerprint))"
    case .sshTunnelOpened(let e): return "tunnel \(e.tunnelID) (\(e.target)) opened on ssh session \(e.sessionID) to sandbox \(e.sandboxID)"
    case .sshTunnelClosed(let e):
      return
        "tunnel \(e.tunnelID) closed after \(e.durationMs) ms: \(e.bytesToSandbox) B to sandbox, \(e.bytesFromSandbox) B from sandbox\(e.reason.isEmpty ? "" : " (\(e.reason))")"
    case .sshSessionRevoked(let e): return "ssh session \(e.id) revoked"
    case .serviceExposed(let e):
      return
        "service \(e.service.isEmpty ? "(unnamed)" : e.service) of sandbox \(e.sandboxID) exposed: port \(e.targetPort), authorization \(e.authorizationMode == 2 ? "bearer passthrough" : "strip")"
    case .serviceDeleted(let e): return "service \(e.service.isEmpty ? "(unnamed)" : e.service) of sandbox \(e.sandboxID) deleted"
    case .gatewayRestored(let e):
      return "restored as gateway \(e.gatewayName) from \(e.source) (\(e.records) records)"
        + (e.droppedSandboxes.isEmpty ? "" : "; dropped sandboxes \(e.droppedSandboxes.joined(separator: ","))")
        + (e.failedSandboxes.isEmpty ? "" : "; marked failed \(e.failedSandboxes.joined(separator: ","))")
    case .auditCheckpoint(let e): return "checkpoint: records 1…\(e.coversSeq) signed by key \(e.keySha256.prefix(16))…"
    case .accessRefused(let e): return refusal(e)
    case .credentialsDisclosed(let e):
      return "credentials \(e.keys.joined(separator: ",")) of \(e.providers.joined(separator: ",")) to \(e.recipient) via \(e.rpc)"
    case .credentialsSubstituted(let e):
      let total = e.substitutions.reduce(0) { $0 + Int($1.count) }
      let items = e.substitutions.map { s in
        let provider = s.provider.isEmpty ? "" : " of \(s.provider)"
        let destination = s.host.isEmpty ? "(other destinations)" : "\(s.host):\(s.port)"
        return "\(s.key)\(provider) → \(destination) by \(s.binary.isEmpty ? "(unidentified)" : s.binary) ×\(s.count)"
      }
      return "credential placeholders substituted in \(total) request(s): " + items.joined(separator: "; ")
    case .execStarted(let e): return "exec \(e.execID)\(e.tty ? " (tty)" : ""): \(e.command.joined(separator: " "))"
    case .execEnded(let e): return "exec \(e.execID) ended: " + (e.error.isEmpty ? "exit \(e.exitCode)" : e.error) + " after \(e.durationMs) ms"
    case .supervisorConnected(let e):
      return
        "supervisor of sandbox \(e.sandboxID) connected: session \(e.sessionID), instance \(e.instanceID) epoch \(e.epoch), as \(e.identity) from \(e.peer)"
        + (e.unrecordedSessions == 0 ? "" : " (\(e.unrecordedSessions) earlier sessions not recorded one by one)")
    case .supervisorDisconnected(let e) where e.sessionID.isEmpty:
      return "supervisor of sandbox \(e.sandboxID): \(e.unrecordedSessions) sessions not recorded one by one (\(e.durationMs) ms in all): \(e.reason)"
    case .supervisorDisconnected(let e):
      return "supervisor of sandbox \(e.sandboxID) disconnected: session \(e.sessionID) after \(e.durationMs) ms: \(e.reason)"
    }
  }

  /// A refusal window: count, RPC, identity, first peer (and how many other addresses), code, reason, and for
  /// unverified clients the first subject claimed (a ``ClaimedText`` sample) and how many distinct ones.
  /// Records written before the sample existed kept the claim in the identity (`unverified:<subject>`, as
  /// presented): it is escaped and capped here the same way.
  static func refusal(_ e: Openshell_Events_V1_AccessRefused) -> String {
    var line = "refused \(e.count)× \(e.rpc) for \(ClaimedText.displayIdentity(e.identity)) from \(e.peer)"
    if e.distinctPeers > 1 { line += " (\(atLeast(e.distinctPeers)) addresses)" }
    line += ": \(e.code) \(e.reason)"
    if !e.claimedSubject.isEmpty {
      line += "; claimed subject \"\(e.claimedSubject)\""
      if e.distinctSubjects > 1 { line += " (\(atLeast(e.distinctSubjects)) distinct subjects)" }
    }
    return line
  }

  /// A distinct count of a refusal window; the aggregator stops counting at ``ClaimedText/countedDistinct``.
  static func atLeast(_ n: UInt64) -> String { n >= ClaimedText.countedDistinct ? "≥\(n)" : "\(n)" }

  static func labels(_ l: [String: String]) -> String {
    l.isEmpty ? "" : " labels " + l.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
  }
}
