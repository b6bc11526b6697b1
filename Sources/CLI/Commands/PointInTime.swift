import Foundation
import LogTools
import OpenShellAPI
import PolicyKit
import SwiftProtobuf

/// `sandbox get NAME --at …` and `policy get NAME --at …`: a sandbox and its policy revisions as they
/// were at a seq or a time, rebuilt by the gateway from its log (audit API `GetSandboxAt`; issue 12).
enum PointInTime {
  /// Parses `--at`: a seq (digits), an RFC 3339 time, or a duration ago (`90s`, `5m`, `2h`, `3d`).
  /// - Throws: `CLIError` naming the accepted forms.
  static func request(_ at: String) throws -> (seq: UInt64, timeNs: UInt64) {
    if let seq = UInt64(at), seq > 0 { return (seq, 0) }
    guard let ns = parseTime(at), ns > 0 else {
      throw CLIError("--at expects a seq (e.g. 120), an RFC 3339 time (2026-12-05T10:00:00Z) or a duration ago (5m, 2h); got '\(at)'")
    }
    return (0, ns)
  }

  /// Fetches the view; the sandbox view of `openshell-replay state` and the seq it is as of.
  static func sandbox(_ t: Target, name: String, workspace: String, at: String) async throws -> (seq: UInt64, view: StateView.SandboxView) {
    let (seq, timeNs) = try request(at)
    let response = try await AuditCLI.withAudit(t) { api in
      try await api.getSandboxAt(
        .with {
          $0.name = name
          $0.workspace = workspace
          $0.atSeq = seq
          $0.atTimeNs = timeNs
        }, options: GatewayClient.options(timeout: .seconds(60)))
    }
    do {
      return (response.seq, try JSONDecoder().decode(StateView.SandboxView.self, from: Data(response.sandboxJson.utf8)))
    } catch {
      throw CLIError("the gateway's answer for sandbox \(name) at \(at) could not be read: \(error)")
    }
  }

  /// The record of `sandbox get --at`.
  static func sandboxRecord(_ seq: UInt64, _ s: StateView.SandboxView) -> Record {
    Record(pairs: [
      ("As of seq", Int(seq)), ("Id", s.id), ("Name", s.name), ("Workspace", s.workspace), ("Phase", s.phase.lowercased()),
      ("Created", s.created), ("Created by", s.createdBy),
      ("Labels", s.labels.isEmpty ? nil : s.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")),
      ("Providers", s.providers.isEmpty ? nil : s.providers.joined(separator: ",")),
      ("Exit code", s.exitCode.map(String.init)),
      ("Policy version", s.policy.map { Int($0.activeVersion) }),
    ])
  }

  /// The revision `policy get --at` shows: `rev`, or the active one (else the newest) at that point.
  static func revision(_ view: StateView.SandboxView, rev: UInt32) throws -> StateView.PolicyView.Revision {
    guard let policy = view.policy, !policy.revisions.isEmpty else {
      throw CLIError("sandbox \(view.name) had no policy revision at that point")
    }
    let wanted = rev > 0 ? rev : (policy.activeVersion > 0 ? policy.activeVersion : policy.revisions.map(\.version).max()!)
    guard let r = policy.revisions.first(where: { $0.version == wanted }) else {
      throw CLIError(
        "sandbox \(view.name) had no policy revision \(wanted) at that point (it had \(policy.revisions.map { "v\($0.version)" }.joined(separator: ", ")))")
    }
    return r
  }

  /// The revision's policy as YAML (via the contract message), or its JSON when it does not decode.
  static func policyYAML(_ r: StateView.PolicyView.Revision) -> String {
    let json = (try? JSONEncoder().encode(r.policy)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    if let policy = try? Openshell_Sandbox_V1_SandboxPolicy(jsonString: json) { return PolicyYAML.render(policy) }
    return json + "\n"
  }
}
