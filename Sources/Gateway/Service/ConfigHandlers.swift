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
  /// Who may call a dual-mode RPC for `sandbox`: users/operators, or the sandbox itself (certificate
  /// `OU=sandbox`, or its token when the caller has no certificate).
  /// - Returns: the actor and whether the caller is that sandbox.
  func dualCaller(_ rpc: String, for sandbox: SandboxRecord?) throws -> (actor: String, isSandbox: Bool) {
    let caller = CallerIdentity.current
    switch caller.kind {
    case .sandbox(let id):
      guard let sandbox, sandbox.id == id else {
        throw RPCErrors.permissionDenied("sandbox \(id) may call \(rpc) only for itself")
      }
      return (caller.actor, true)
    case .anonymous:
      let token = SandboxTokenInterceptor.current
      if !token.isEmpty {
        guard let sandbox, let hub, hub.verify(token: token, claimedSandboxID: sandbox.id) else {
          throw RPCErrors.permissionDenied("the sandbox token does not belong to the sandbox named in \(rpc)")
        }
        return ("sandbox:\(sandbox.id)", true)
      }
      return (caller.actor, false)
    case .operator, .user:
      return (caller.actor, false)
    }
  }

  /// Resolves the sandbox a config RPC names. A sandbox caller may leave the name empty (itself) or
  /// give its id; everyone else names it in `workspace_scope`.
  func configSandbox(_ name: String, _ scope: Openshell_Datamodel_V1_WorkspaceSelector, _ state: GatewayState, field: String) throws -> SandboxRecord {
    if let id = CallerIdentity.current.sandboxID {
      guard let s = state.sandboxes[id] else { throw RPCErrors.notFound("sandbox \(id)") }
      // A sandbox names only itself (by id or name); it learns nothing about other sandboxes.
      guard name.isEmpty || name == id || name == s.name else {
        throw RPCErrors.permissionDenied("sandbox \(id) may access only its own configuration")
      }
      return s
    }
    guard !name.isEmpty else { throw RPCErrors.invalidArgument(field: field, "name is required for sandbox-scoped updates") }
    if CallerIdentity.current.kind == .anonymous, !SandboxTokenInterceptor.current.isEmpty, let s = state.sandboxes[name] { return s }
    let ws = try workspace(scope, state)
    guard let s = state.sandbox(named: name, workspace: ws) else { throw RPCErrors.notFound("sandbox \(ws)/\(name)") }
    return s
  }

  /// The state with revision 1 derived from `spec.policy` for a sandbox recorded without it (older
  /// logs), for reads: nothing is written (reads never append events).
  func withInitialRevision(_ sandboxID: String) async -> GatewayState {
    var state = await store.state
    guard let s = state.sandboxes[sandboxID] else { return state }
    let seq = state.lastSeq
    for e in ConfigModel.initialRevisionEvents(s, state) { state.apply(e, seq: seq, timestampNs: 0) }
    return state
  }

  // MARK: UpdateConfig

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

  // MARK: reads

  public func getSandboxConfig(request: Openshell_Sandbox_V1_GetSandboxConfigRequest, context: ServerContext) async throws
    -> Openshell_Sandbox_V1_GetSandboxConfigResponse
  {
    let sandbox = try configSandbox(request.name, request.workspaceScope, await store.state, field: "name")
    _ = try dualCaller("GetSandboxConfig", for: sandbox)
    let state = await withInitialRevision(sandbox.id)
    guard let s = state.sandboxes[sandbox.id] else { throw RPCErrors.notFound("sandbox \(sandbox.id)") }
    return ConfigModel.response(ConfigModel.snapshot(s, state))
  }

  public func getGatewayConfig(request: Openshell_Sandbox_V1_GetGatewayConfigRequest, context: ServerContext) async throws
    -> Openshell_Sandbox_V1_GetGatewayConfigResponse
  {
    _ = try userCaller("GetGatewayConfig")
    let state = await store.state
    let global = state.settings[SettingsRegistry.globalScope] ?? [:]
    return .with {
      for (k, v) in global { $0.settings[k] = SettingsRegistry.wire(key: k, v) }
      if state.globalPolicyActive, let g = state.globalPolicy.revision(state.globalPolicy.activeVersion) {
        $0.settings[SettingsRegistry.reservedPolicyKey] = .with { $0.bytesValue = g.policy }
      }
      $0.settingsRevision = SettingsRegistry.revision(global)
    }
  }

  /// The history a policy read refers to (`global` or the named sandbox's).
  func policyHistory(sandbox name: String, global: Bool, scope: Openshell_Datamodel_V1_WorkspaceSelector, rpc: String) async throws -> PolicyHistory {
    _ = try userCaller(rpc)
    if global { return await store.state.globalPolicy }
    let sandbox = try configSandbox(name, scope, await store.state, field: "sandbox")
    let state = await withInitialRevision(sandbox.id)
    return state.policies[sandbox.id] ?? PolicyHistory()
  }

  public func getSandboxPolicyStatus(request: Openshell_V1_GetSandboxPolicyStatusRequest, context: ServerContext) async throws
    -> Openshell_V1_GetSandboxPolicyStatusResponse
  {
    let history = try await policyHistory(sandbox: request.sandbox, global: request.global, scope: request.workspaceScope, rpc: "GetSandboxPolicyStatus")
    let revision = request.version == 0 ? history.latest : history.revision(request.version)
    guard let revision else { throw RPCError(code: .notFound, message: "no policy revision found for this \(request.global ? "gateway (global)" : "sandbox")") }
    return .with {
      $0.revision = ConfigModel.revision(revision, full: true)
      $0.activeVersion = history.activeVersion
    }
  }

  public func listSandboxPolicies(request: Openshell_V1_ListSandboxPoliciesRequest, context: ServerContext) async throws
    -> Openshell_V1_ListSandboxPoliciesResponse
  {
    let history = try await policyHistory(sandbox: request.sandbox, global: request.global, scope: request.workspaceScope, rpc: "ListSandboxPolicies")
    let newestFirst = history.revisions.reversed().map { $0 }
    // Keys sort like the list (newest first): 10 digits of (max - version).
    let page = try Pagination.page(
      newestFirst, key: { String(format: "%010u", UInt32.max - $0.version) },
      pageSize: request.pageSize == 0 ? 50 : request.pageSize, pageToken: request.pageToken)
    return .with {
      $0.revisions = page.items.map { ConfigModel.revision($0, full: false) }
      $0.nextPageToken = page.next
    }
  }

  // MARK: supervisor acknowledgement

  public func reportPolicyStatus(request: Openshell_V1_ReportPolicyStatusRequest, context: ServerContext) async throws
    -> Openshell_V1_ReportPolicyStatusResponse
  {
    let id = try sandboxCaller("ReportPolicyStatus", claimed: request.sandboxID)
    guard request.version > 0 else { throw RPCErrors.invalidArgument(field: "version", "version must be greater than 0") }
    guard request.status == .loaded || request.status == .failed else {
      throw RPCErrors.invalidArgument(field: "status", "status must be LOADED or FAILED")
    }
    let actor = CallerIdentity.current.sandboxID != nil ? CallerIdentity.current.actor : "sandbox:\(id)"
    let result = try await store.execute(actor: actor, requestID: "") { recorded in
      guard let sandbox = recorded.sandboxes[id] else { throw RPCErrors.notFound("sandbox \(id)") }
      // A sandbox recorded without its initial revision (older logs): recorded with this acknowledgement.
      let initial = ConfigModel.initialRevisionEvents(sandbox, recorded)
      var state = recorded
      for e in initial { state.apply(e, seq: recorded.lastSeq, timestampNs: 0) }
      let history = state.policies[id] ?? PolicyHistory()
      guard let r = history.revision(request.version) else {
        throw RPCError(code: .notFound, message: "policy revision \(request.version) of sandbox \(id) not found")
      }
      if request.status == .failed {
        guard r.status != .failed || r.message != request.loadError else {
          return initial.isEmpty ? Decision(events: [], noop: true) : Decision(events: initial)
        }
        return Decision(
          events: initial + [
            GatewayEvent(
              .policyRevisionFailed(
                .with {
                  $0.sandboxID = id; $0.version = r.version; $0.message = request.loadError
                }))
          ])
      }
      if r.status == .loaded { return initial.isEmpty ? Decision(events: [], noop: true) : Decision(events: initial) }
      if r.version < history.activeVersion {
        // A late acknowledgement of an older revision: it is already replaced.
        guard r.status != .superseded else { return initial.isEmpty ? Decision(events: [], noop: true) : Decision(events: initial) }
        return Decision(
          events: initial + [
            GatewayEvent(
              .policyRevisionSuperseded(
                .with {
                  $0.sandboxID = id; $0.version = r.version; $0.supersededBy = history.activeVersion
                }))
          ])
      }
      var events = [
        GatewayEvent(
          .policyRevisionLoaded(
            .with {
              $0.sandboxID = id; $0.version = r.version
            }))
      ]
      for old in history.revisions where old.version < r.version && (old.status == .pending || old.status == .loaded) {
        events.append(
          GatewayEvent(
            .policyRevisionSuperseded(
              .with {
                $0.sandboxID = id; $0.version = old.version; $0.supersededBy = r.version
              })))
      }
      return Decision(events: initial + events)
    }
    // A newly failed revision is no longer offered (``ConfigModel/snapshot(_:_:)``): the supervisor gets
    // the revision in force again, so one that starts with a revision it then rejects does not stay
    // without a network policy until its next reconnect.
    if request.status == .failed, !result.decision.noop { pushConfig([id], result.state) }
    return .init()
  }

  // MARK: delivery

  /// Pushes the current effective configuration to each sandbox's connected supervisor.
  func pushConfig(_ sandboxIDs: [String], _ state: GatewayState) {
    guard let hub else { return }
    for id in sandboxIDs {
      guard let s = state.sandboxes[id], hub.connectedInstance(id) != nil else { continue }
      let snapshot = ConfigModel.snapshot(s, state)
      hub.send(
        .with {
          $0.configUpdate = .with {
            $0.updateID = "sandbox-config-\(snapshot.configRevision)"
            $0.sandboxConfig = snapshot
          }
        }, to: id)
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
