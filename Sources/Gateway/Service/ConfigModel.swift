import Crypto
import Foundation
import OpenShellAPI
import PolicyKit
import Projections
import SwiftProtobuf

/// Registered settings (openshell-behavior.md §1E): `ocsf_json_enabled` (bool), plus OpenShell's
/// development keys `dummy_int` and `dummy_bool`. `policy` is reserved (the global policy).
/// Values are stored in `setting.set` events as canonical strings (`true`/`false`, decimal integers).
enum SettingsRegistry {
  enum Kind: String { case bool, int, string }

  static let keys: [String: Kind] = ["ocsf_json_enabled": .bool, "dummy_int": .int, "dummy_bool": .bool]
  static let reservedPolicyKey = "policy"
  static let globalScope = "global"

  /// The canonical stored string for a request's value, or an error message.
  struct Invalid: Error { let message: String }

  static func canonical(key: String, _ value: Openshell_Sandbox_V1_SettingValue) -> Result<String, Invalid> {
    guard let kind = keys[key] else {
      return .failure(Invalid(message: "unknown setting key '\(key)' (registered: \(keys.keys.sorted().joined(separator: ", ")))"))
    }
    switch (kind, value.value) {
    case (.bool, .boolValue(let b)?): return .success(b ? "true" : "false")
    case (.bool, .stringValue(let s)?):
      switch s.lowercased() {
      case "1", "true", "yes", "y", "on": return .success("true")
      case "0", "false", "no", "n", "off": return .success("false")
      default: return .failure(Invalid(message: "setting '\(key)' expects a bool (1/true/yes/y/on or 0/false/no/n/off), got '\(s)'"))
      }
    case (.int, .intValue(let i)?): return .success(String(i))
    case (.int, .stringValue(let s)?):
      guard let i = Int64(s) else { return .failure(Invalid(message: "setting '\(key)' expects an integer, got '\(s)'")) }
      return .success(String(i))
    case (.string, .stringValue(let s)?): return .success(s)
    case (_, nil): return .failure(Invalid(message: "setting_value is required"))
    default: return .failure(Invalid(message: "setting '\(key)' expects a \(kind.rawValue) value"))
    }
  }

  /// Why a value is refused although it is well-formed, or nil: values whose effect this gateway does
  /// not have yet are refused, never stored and ignored (issue 16). `ocsf_json_enabled=true` asks the
  /// supervisor for OCSF JSONL files inside the sandbox (openshell-behavior.md §1E, "Files inside the
  /// sandbox"), which it does not write; `false`, the default, is accepted.
  static func unsupported(key: String, _ stored: String) -> String? {
    guard key == "ocsf_json_enabled", stored == "true" else { return nil }
    return "setting 'ocsf_json_enabled' = true is not supported yet: supervisors write no OCSF JSONL files in sandboxes; "
      + "the gateway's audit trail is available as OCSF events with `openshell audit -o ocsf`"
  }

  static func wire(key: String, _ stored: String) -> Openshell_Sandbox_V1_SettingValue {
    switch keys[key] {
    case .bool?: return .with { $0.boolValue = stored == "true" }
    case .int?: return .with { $0.intValue = Int64(stored) ?? 0 }
    default: return .with { $0.stringValue = stored }
    }
  }

  /// A 63-bit revision derived from a scope's content (each scope has its own; it changes whenever
  /// the content changes; 0 = empty).
  static func revision(_ values: [String: String]) -> UInt64 {
    guard !values.isEmpty else { return 0 }
    let text = values.keys.sorted().map { "\($0)=\(values[$0]!)" }.joined(separator: "\n")
    return ConfigModel.digest64(text)
  }
}

/// A sandbox's effective configuration, derived from the projection (policy revisions, global
/// policy, settings).
struct ConfigModel {
  static func digest64(_ text: String) -> UInt64 {
    let d = Array(SHA256.hash(data: Data(text.utf8)))
    var v: UInt64 = 0
    for i in 0..<8 { v = (v << 8) | UInt64(d[i]) }
    return v & 0x7fff_ffff_ffff_ffff
  }

  static func policy(_ r: PolicyRevisionRecord) -> Openshell_Sandbox_V1_SandboxPolicy {
    (try? Openshell_Sandbox_V1_SandboxPolicy(serializedBytes: r.policy)) ?? .init()
  }

  /// The baseline for live-update checks: the creation policy (`spec.policy`), else the first revision.
  static func baseline(_ sandbox: SandboxRecord, _ state: GatewayState) -> Openshell_Sandbox_V1_SandboxPolicy? {
    if let spec = try? Openshell_V1_SandboxSpec(serializedBytes: sandbox.spec), spec.hasPolicy { return spec.policy }
    return state.policies[sandbox.id]?.revisions.first.map(policy)
  }

  /// The policy whose startup-only sections (`filesystem_policy`, `landlock`, `process`) a sandbox
  /// starts with, and that a running sandbox's live updates are checked against (OpenShell:
  /// openshell-behavior.md §1E "Set", §7 "Live-update validation"). One source for the local driver
  /// (``ConfinementPlanner/startupPolicy(_:_:)``, which puts these sections into `launch.json`, the plan
  /// the supervisor compares every revision with) and for `UpdateConfig`: the newest revision that did
  /// not fail and that the supervisor will not reject for its own checks (``PolicyRules/l7Issues(_:)``),
  /// so a revision set while the sandbox was stopped and rejected after its start is not the reference
  /// either (a rejected revision is never started with), else the creation policy (`spec.policy`), else
  /// ``PolicyRules/restrictiveDefault`` (a sandbox created without a policy starts with the default's
  /// filesystem, landlock and process sections).
  static func startedPolicy(_ sandbox: SandboxRecord, _ state: GatewayState) -> (policy: Openshell_Sandbox_V1_SandboxPolicy, source: String) {
    if let r = state.policies[sandbox.id]?.revisions.last(where: { $0.status != .failed && PolicyRules.l7Issues(policy($0)).isEmpty }) {
      return (PolicyRules.normalized(policy(r)), "policy v\(r.version)")
    }
    if let spec = try? Openshell_V1_SandboxSpec(serializedBytes: sandbox.spec), spec.hasPolicy {
      return (PolicyRules.normalized(spec.policy), "spec policy")
    }
    return (PolicyRules.normalized(PolicyRules.restrictiveDefault), "restrictive default policy")
  }

  /// Whether the sandbox runs (or is being started or stopped): its startup-only policy sections are fixed.
  static func isRunning(_ sandbox: SandboxRecord) -> Bool {
    [.provisioning, .starting, .ready, .stopping].contains(sandbox.phase)
  }

  /// Revision 1 from `spec.policy` (OpenShell's initial revision), pending until the supervisor reports
  /// it loaded or failed. `CreateSandbox` records it with the sandbox; for a sandbox recorded without it
  /// (logs written before that) reads derive it without writing, and `ReportPolicyStatus` records it
  /// together with the acknowledgement. Empty when the sandbox already has revisions or no creation policy.
  static func initialRevisionEvents(_ sandbox: SandboxRecord, _ state: GatewayState) -> [GatewayEvent] {
    guard state.policies[sandbox.id]?.revisions.isEmpty ?? true,
      let spec = try? Openshell_V1_SandboxSpec(serializedBytes: sandbox.spec), spec.hasPolicy
    else { return [] }
    return [initialRevision(sandboxID: sandbox.id, spec.policy)]
  }

  /// The `policy.revision_submitted` event of revision 1 for a creation policy.
  static func initialRevision(sandboxID: String, _ policy: Openshell_Sandbox_V1_SandboxPolicy) -> GatewayEvent {
    let p = PolicyRules.normalized(policy)
    return GatewayEvent(
      .policyRevisionSubmitted(
        .with {
          $0.sandboxID = sandboxID
          $0.version = 1
          $0.contentSha256 = PolicyRules.hash(p)
          $0.policy = PolicyRules.canonicalBytes(p)
        }))
  }

  /// Effective settings: global keys win (a key set globally cannot be set per sandbox).
  static func settings(_ sandboxID: String, _ state: GatewayState) -> [String: Openshell_Sandbox_V1_EffectiveSetting] {
    var out: [String: Openshell_Sandbox_V1_EffectiveSetting] = [:]
    for (k, v) in state.settings[sandboxID] ?? [:] {
      out[k] = .with {
        $0.value = SettingsRegistry.wire(key: k, v); $0.scope = .sandbox
      }
    }
    for (k, v) in state.settings[SettingsRegistry.globalScope] ?? [:] {
      out[k] = .with {
        $0.value = SettingsRegistry.wire(key: k, v); $0.scope = .global
      }
    }
    return out
  }

  /// The snapshot the supervisor receives (GetSandboxConfig and pushed `ConfigUpdate`s). Its policy
  /// is the newest revision that did not fail: a revision the supervisor rejected is never offered
  /// again, so a supervisor that starts (or reconnects) after a rejection loads the revision that was
  /// in force instead of rejecting the failed one again and running without any network policy.
  static func snapshot(_ sandbox: SandboxRecord, _ state: GatewayState) -> Openshell_Sandbox_V1_SandboxConfigSnapshot {
    var s = Openshell_Sandbox_V1_SandboxConfigSnapshot()
    if let latest = state.policies[sandbox.id]?.revisions.last(where: { $0.status != .failed }) {
      s.version = latest.version
      s.policyHash = latest.contentSHA256
      s.policy = policy(latest)
    }
    s.policySource = .sandbox
    if state.globalPolicyActive, let g = state.globalPolicy.revision(state.globalPolicy.activeVersion) {
      s.policy = policy(g)
      s.policyHash = g.contentSHA256
      s.policySource = .global
      s.globalPolicyVersion = g.version
    }
    s.settings = settings(sandbox.id, state)
    var merged = state.settings[sandbox.id] ?? [:]
    for (k, v) in state.settings[SettingsRegistry.globalScope] ?? [:] { merged["global:" + k] = v }
    s.settingsRevision = SettingsRegistry.revision(merged)
    s.workspace = sandbox.workspace
    s.policyValidationFailureMode = "fail_closed"
    s.configRevision = digest64("\(s.version)|\(s.policyHash)|\(s.policySource.rawValue)|\(s.globalPolicyVersion)|\(s.settingsRevision)")
    return s
  }

  static func response(_ s: Openshell_Sandbox_V1_SandboxConfigSnapshot) -> Openshell_Sandbox_V1_GetSandboxConfigResponse {
    .with {
      if s.hasPolicy { $0.policy = s.policy }
      $0.version = s.version
      $0.policyHash = s.policyHash
      $0.settings = s.settings
      $0.configRevision = s.configRevision
      $0.policySource = s.policySource
      $0.globalPolicyVersion = s.globalPolicyVersion
      $0.workspace = s.workspace
      $0.policyValidationFailureMode = s.policyValidationFailureMode
      $0.settingsRevision = s.settingsRevision
    }
  }

  static func revision(_ r: PolicyRevisionRecord, full: Bool) -> Openshell_V1_SandboxPolicyRevision {
    .with {
      $0.version = r.version
      $0.policyHash = r.contentSHA256
      $0.status = Openshell_V1_PolicyStatus(rawValue: r.status.rawValue) ?? .unspecified
      $0.loadError = r.message
      $0.createdTime = Wire.timestamp(ns: r.submittedNs)
      if let l = r.loadedNs { $0.loadedTime = Wire.timestamp(ns: l) }
      if full { $0.policy = policy(r) }
    }
  }
}
