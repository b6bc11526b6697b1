// UpdateConfig: sandbox policy revisions, the global policy and settings, with the rules every config RPC
// follows (the doc comment below). Caller and sandbox resolution: ConfigCallers.swift; reads:
// ConfigReadHandlers.swift; supervisor acknowledgement and delivery: PolicyStatusHandlers.swift.

import Foundation
import GRPCCore
import OpenShellAPI
import PolicyKit
import Projections

/// Policies and settings (openshell-behavior.md §1E, §5.2, §7): UpdateConfig, GetSandboxConfig,
/// GetGatewayConfig, GetSandboxPolicyStatus, ListSandboxPolicies, ReportPolicyStatus.
///
/// Every change is a `policy.*` / `global_policy.*` / `setting.*` event; after it is appended, the new
/// effective configuration is pushed to the affected sandboxes' connected supervisors as a
/// `ConfigUpdate{sandbox_config}` on their `ConnectSupervisor` stream (no polling). Supervisors answer
/// with `ReportPolicyStatus`.
///
/// Revision lifecycle: `UpdateConfig` appends version latest+1 (`pending`; older pending revisions
/// become `superseded`); identical content (same normalized SHA-256) returns the latest version
/// unchanged. The supervisor reports `loaded` (older pending/loaded revisions become `superseded`;
/// the sandbox's `current_policy_version` becomes this version) or `failed` (the last loaded
/// revision stays active). A global policy replaces every sandbox's policy and blocks sandbox-level
/// policy updates; supervisors never acknowledge it.
extension OpenShellService {
  /// `UpdateConfig` RPC: sets a sandbox policy revision (`policy.revision_submitted`), the global policy or a
  /// setting (`setting.set`/`setting.deleted`). Callers: operators and users, not sandboxes for global changes;
  /// for a sandbox also that sandbox itself. Answers the resulting version and policy hash.
  public func updateConfig(request: Openshell_V1_UpdateConfigRequest, context: ServerContext) async throws -> Openshell_V1_UpdateConfigResponse {
    if request.hasPolicy && !request.settingKey.isEmpty {
      throw RPCErrors.invalidArgument(field: "policy", "policy and setting_key cannot be set in the same request")
    }
    if !request.mergeOperations.isEmpty {
      throw RPCErrors.invalidArgument(field: "merge_operations", "incremental merge operations are not supported by this gateway; send the complete policy")
    }
    if request.hasPolicy { try ObjectLimits.checkPolicy(request.policy, field: "policy") }
    if !request.hasPolicy && request.settingKey.isEmpty {
      throw RPCErrors.invalidArgument(field: "policy", "either policy or setting_key must be provided")
    }
    if request.global {
      if CallerIdentity.current.sandboxID != nil || !SandboxTokenInterceptor.current.isEmpty && CallerIdentity.current.kind == .anonymous {
        throw RPCErrors.permissionDenied("sandbox identities may not change gateway-wide configuration")
      }
      return try await request.hasPolicy ? updateGlobalPolicy(request) : updateSetting(request, sandbox: nil)
    }
    let state = await store.state
    let sandbox = try configSandbox(request.sandbox, request.workspaceScope, state, field: "sandbox")
    _ = try dualCaller("UpdateConfig", for: sandbox)
    if request.hasPolicy { return try await updateSandboxPolicy(request, sandboxID: sandbox.id) }
    return try await updateSetting(request, sandbox: sandbox.id)
  }

  func updateSandboxPolicy(_ request: Openshell_V1_UpdateConfigRequest, sandboxID: String) async throws -> Openshell_V1_UpdateConfigResponse {
    let unsafe = PolicyRules.safetyIssues(request.policy)
    if !unsafe.isEmpty { throw RPCErrors.invalidArgument(field: "policy", PolicyRules.unsafeMessage(unsafe)) }
    let policy = PolicyRules.normalized(request.policy)
    let hash = PolicyRules.hash(policy)
    let (actor, _) = try dualCaller("UpdateConfig", for: await store.state.sandboxes[sandboxID])
    let result = try await store.execute(actor: actor, requestID: request.requestID, rpc: "UpdateConfig", target: Self.configTarget(request)) { state in
      guard let s = state.sandboxes[sandboxID] else { throw RPCErrors.notFound("sandbox \(sandboxID)") }
      guard s.phase != .deleting else { throw RPCErrors.failedPrecondition("sandbox \(s.workspace)/\(s.name) is being deleted") }
      if state.globalPolicyActive {
        throw RPCErrors.failedPrecondition("policy is managed globally; delete global policy before sandbox policy update")
      }
      // Startup-only sections cannot change while the sandbox runs; a stopped sandbox takes the new
      // ones at its next start (`sandbox stop` + `sandbox start`).
      // The reference is what the sandbox started with (never a revision the supervisor rejected); the
      // check runs before any revision is recorded, so a refused change leaves no revision behind.
      if ConfigModel.isRunning(s) {
        let live = PolicyRules.liveUpdateIssues(baseline: ConfigModel.startedPolicy(s, state).policy, proposed: policy)
        if !live.isEmpty {
          throw RPCErrors.invalidArgument(field: "policy", live.map(\.message).joined(separator: "; "))
        }
      }
      var events = ConfigModel.initialRevisionEvents(s, state)
      let history = state.policies[s.id] ?? PolicyHistory()
      var latestVersion = history.latest?.version ?? 0
      var latestHash = history.latest?.contentSHA256 ?? ""
      if !events.isEmpty { latestVersion = 1; latestHash = PolicyRules.hash(ConfigModel.baseline(s, state)!) }
      if latestHash == hash {
        return Decision(events: events, target: "\(latestVersion)", noop: events.isEmpty)
      }
      let version = latestVersion + 1
      events.append(
        GatewayEvent(
          .policyRevisionSubmitted(
            .with {
              $0.sandboxID = s.id
              $0.version = version
              $0.contentSha256 = hash
              $0.policy = PolicyRules.canonicalBytes(policy)
            })))
      for r in history.revisions where r.status == .pending {
        events.append(
          GatewayEvent(
            .policyRevisionSuperseded(
              .with {
                $0.sandboxID = s.id; $0.version = r.version; $0.supersededBy = version
              })))
      }
      return Decision(events: events, claims: ["policy/\(s.id)"], target: "\(version)")
    }
    let version = UInt32(result.decision.target) ?? 0
    if !result.decision.noop { pushConfig([sandboxID], result.state) }
    return .with {
      $0.version = version
      $0.policyHash = result.state.policies[sandboxID]?.revision(version)?.contentSHA256 ?? hash
      $0.settingsRevision = SettingsRegistry.revision(result.state.settings[sandboxID] ?? [:])
    }
  }

  func updateGlobalPolicy(_ request: Openshell_V1_UpdateConfigRequest) async throws -> Openshell_V1_UpdateConfigResponse {
    let unsafe = PolicyRules.safetyIssues(request.policy)
    if !unsafe.isEmpty { throw RPCErrors.invalidArgument(field: "policy", PolicyRules.unsafeMessage(unsafe)) }
    let policy = PolicyRules.normalized(request.policy)
    let hash = PolicyRules.hash(policy)
    let result = try await store.execute(
      actor: CallerIdentity.current.actor, requestID: request.requestID, rpc: "UpdateConfig", target: Self.configTarget(request)
    ) { state in
      let g = state.globalPolicy
      if state.globalPolicyActive, let active = g.revision(g.activeVersion), active.contentSHA256 == hash {
        return Decision(events: [], target: "\(active.version)", noop: true)
      }
      let version = (g.latest?.version ?? 0) + 1
      var events: [GatewayEvent] = []
      if state.globalPolicyActive {
        events.append(
          GatewayEvent(
            .policyRevisionSuperseded(
              .with {
                $0.version = g.activeVersion; $0.supersededBy = version
              })))
      }
      events.append(
        GatewayEvent(
          .globalPolicySet(
            .with {
              $0.version = version; $0.contentSha256 = hash; $0.policy = PolicyRules.canonicalBytes(policy)
            })))
      return Decision(events: events, claims: ["policy/global"], target: "\(version)")
    }
    if !result.decision.noop { pushConfig(Array(result.state.sandboxes.keys), result.state) }
    return .with {
      $0.version = UInt32(result.decision.target) ?? 0
      $0.policyHash = hash
      $0.settingsRevision = SettingsRegistry.revision(result.state.settings[SettingsRegistry.globalScope] ?? [:])
    }
  }

  /// Sets or deletes a setting (global when `sandbox` is nil); `policy` + delete + global removes the
  /// global policy.
  func updateSetting(_ request: Openshell_V1_UpdateConfigRequest, sandbox: String?) async throws -> Openshell_V1_UpdateConfigResponse {
    let key = request.settingKey
    let scope = sandbox ?? SettingsRegistry.globalScope
    var stored = ""
    if key == SettingsRegistry.reservedPolicyKey {
      guard sandbox == nil, request.deleteSetting else {
        throw RPCErrors.invalidArgument(field: "setting_key", "setting 'policy' is reserved; use 'openshell policy set --global' / 'policy delete --global'")
      }
    } else if !request.deleteSetting {
      switch SettingsRegistry.canonical(key: key, request.settingValue) {
      case .success(let v): stored = v
      case .failure(let m): throw RPCErrors.invalidArgument(field: "setting_key", m.message)
      }
      if let refusal = SettingsRegistry.unsupported(key: key, stored) {
        throw RPCErrors.failedPrecondition(refusal)
      }
    } else if SettingsRegistry.keys[key] == nil {
      throw RPCErrors.invalidArgument(
        field: "setting_key", "unknown setting key '\(key)' (registered: \(SettingsRegistry.keys.keys.sorted().joined(separator: ", ")))")
    }
    var actor = CallerIdentity.current.actor
    if let sandbox { actor = try dualCaller("UpdateConfig", for: await store.state.sandboxes[sandbox]).actor }
    let storedValue = stored
    let result = try await store.execute(actor: actor, requestID: request.requestID, rpc: "UpdateConfig", target: Self.configTarget(request)) { state in
      if key == SettingsRegistry.reservedPolicyKey {
        guard state.globalPolicyActive else { return Decision(events: [], noop: true) }
        let v = state.globalPolicy.activeVersion
        return Decision(
          events: [
            GatewayEvent(.globalPolicyDeleted(.with { $0.version = v })),
            GatewayEvent(.policyRevisionSuperseded(.with { $0.version = v })),
          ], claims: ["policy/global"], target: "deleted")
      }
      if sandbox != nil, state.settings[SettingsRegistry.globalScope]?[key] != nil {
        throw RPCErrors.failedPrecondition(
          "setting '\(key)' is managed globally; delete the global setting first (openshell settings delete --global --key \(key))")
      }
      let current = state.settings[scope]?[key]
      if request.deleteSetting {
        guard current != nil else { return Decision(events: [], noop: true) }
        return Decision(
          events: [
            GatewayEvent(
              .settingDeleted(
                .with {
                  $0.scope = scope; $0.key = key
                }))
          ], target: "deleted")
      }
      if current == storedValue { return Decision(events: [], noop: true) }
      return Decision(events: [
        GatewayEvent(
          .settingSet(
            .with {
              $0.scope = scope; $0.key = key; $0.value = storedValue
            }))
      ])
    }
    if !result.decision.noop {
      pushConfig(sandbox.map { [$0] } ?? Array(result.state.sandboxes.keys), result.state)
    }
    return .with {
      $0.deleted = result.decision.target == "deleted"
      $0.settingsRevision = SettingsRegistry.revision(result.state.settings[scope] ?? [:])
      if key == SettingsRegistry.reservedPolicyKey { $0.version = result.state.globalPolicy.latest?.version ?? 0 }
    }
  }
}

extension OpenShellService {
  /// UpdateConfig's idempotency target: the sandbox (or `(global)`) and the setting key, as requested.
  static func configTarget(_ r: Openshell_V1_UpdateConfigRequest) -> String {
    let scope = r.global ? "(global)" : r.sandbox
    return requestTarget(r.workspaceScope, r.settingKey.isEmpty ? scope : "\(scope):\(r.settingKey)")
  }
}
