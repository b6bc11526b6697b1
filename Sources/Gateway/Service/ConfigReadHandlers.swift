// Config reads: GetSandboxConfig, GetGatewayConfig, GetSandboxPolicyStatus and ListSandboxPolicies.

import Foundation
import GRPCCore
import OpenShellAPI
import Projections

extension OpenShellService {
  /// `GetSandboxConfig` RPC: the sandbox's effective policy and settings (global ones override). Callers:
  /// operators and users, not sandboxes, or that sandbox itself (certificate or token). Reads only; records
  /// nothing.
  public func getSandboxConfig(request: Openshell_Sandbox_V1_GetSandboxConfigRequest, context: ServerContext) async throws
    -> Openshell_Sandbox_V1_GetSandboxConfigResponse
  {
    let sandbox = try configSandbox(request.name, request.workspaceScope, await store.state, field: "name")
    _ = try dualCaller("GetSandboxConfig", for: sandbox)
    let state = await withInitialRevision(sandbox.id)
    guard let s = state.sandboxes[sandbox.id] else { throw RPCErrors.notFound("sandbox \(sandbox.id)") }
    return ConfigModel.response(ConfigModel.snapshot(s, state))
  }

  /// `GetGatewayConfig` RPC: the global settings, the active global policy under the reserved policy key, and
  /// their revision. Callers: operators and users, not sandboxes. Records nothing.
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

  /// `GetSandboxPolicyStatus` RPC: one policy revision (`version` 0 = the newest) of a sandbox or of the global
  /// policy, with the active version. Callers: operators and users, not sandboxes. NOT_FOUND when no such
  /// revision exists.
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

  /// `ListSandboxPolicies` RPC: policy revisions of a sandbox or of the global policy, newest first, paginated
  /// (50 per page by default). Callers: operators and users, not sandboxes.
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
}
