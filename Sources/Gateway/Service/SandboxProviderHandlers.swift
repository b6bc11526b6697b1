// A sandbox's providers: ListSandboxProviders, AttachSandboxProvider and DetachSandboxProvider.

import GRPCCore
import OpenShellAPI
import Projections

extension OpenShellService {
  /// `ListSandboxProviders` RPC: the providers attached to a sandbox (credential values redacted; a name whose
  /// provider no longer exists is listed by name only), paginated. Callers: operators and users, not sandboxes.
  public func listSandboxProviders(request: Openshell_V1_ListSandboxProvidersRequest, context: ServerContext) async throws
    -> Openshell_V1_ListSandboxProvidersResponse
  {
    _ = try userCaller("ListSandboxProviders")
    let state = await store.state
    let ws = try workspace(request.workspaceScope, state)
    guard let s = state.sandbox(named: request.sandbox, workspace: ws) else { throw RPCErrors.notFound("sandbox \(ws)/\(request.sandbox)") }
    let items: [Openshell_Datamodel_V1_Provider] = s.providers.map { name in
      if let p = state.provider(named: name, workspace: ws) { return Wire.provider(p) }
      return .with {
        $0.metadata.name = name; $0.metadata.workspace = ws
      }
    }
    let page = try Pagination.page(items, key: \.metadata.name, pageSize: request.pageSize, pageToken: request.pageToken)
    return .with {
      $0.providers = page.items; $0.nextPageToken = page.next
    }
  }

  /// `AttachSandboxProvider` RPC: records `sandbox.provider_attached` (at most 32 providers per sandbox); a
  /// no-op when already attached. Callers: operators and users, not sandboxes. FAILED_PRECONDITION for a
  /// provider missing from the sandbox's workspace.
  public func attachSandboxProvider(request: Openshell_V1_AttachSandboxProviderRequest, context: ServerContext) async throws
    -> Openshell_V1_AttachSandboxProviderResponse
  {
    let caller = try userCaller("AttachSandboxProvider")
    let result = try await store.execute(
      actor: caller.actor, requestID: request.requestID, rpc: "AttachSandboxProvider",
      target: Self.requestTarget(request.workspaceScope, "\(request.sandbox)/\(request.provider)")
    ) { state in
      let (s, ws) = try attachmentTarget(state, request.workspaceScope, request.sandbox, request.expectedResourceVersion)
      guard state.provider(named: request.provider, workspace: ws) != nil else {
        throw RPCErrors.failedPrecondition("provider \(request.provider) does not exist in workspace \(ws)")
      }
      if s.providers.contains(request.provider) { return Decision(events: [], target: s.id, noop: true) }
      if s.providers.count >= 32 { throw RPCErrors.failedPrecondition("sandbox \(ws)/\(s.name) already has 32 providers") }
      let event = GatewayEvent(
        .sandboxProviderAttached(
          .with {
            $0.sandboxID = s.id; $0.provider = request.provider
          }))
      return Decision(events: [event], claims: ["sandbox-id/\(s.id)"], target: s.id)
    }
    guard let s = result.state.sandboxes[result.decision.target] else { throw RPCErrors.notFound("sandbox \(request.sandbox)") }
    return .with {
      $0.sandbox = Wire.sandbox(s, state: result.state)
      $0.attached = s.providers.contains(request.provider)
    }
  }

  /// `DetachSandboxProvider` RPC: records `sandbox.provider_detached`; a no-op when not attached. Callers:
  /// operators and users, not sandboxes.
  public func detachSandboxProvider(request: Openshell_V1_DetachSandboxProviderRequest, context: ServerContext) async throws
    -> Openshell_V1_DetachSandboxProviderResponse
  {
    let caller = try userCaller("DetachSandboxProvider")
    let result = try await store.execute(
      actor: caller.actor, requestID: request.requestID, rpc: "DetachSandboxProvider",
      target: Self.requestTarget(request.workspaceScope, "\(request.sandbox)/\(request.provider)")
    ) { state in
      let (s, _) = try attachmentTarget(state, request.workspaceScope, request.sandbox, request.expectedResourceVersion)
      guard s.providers.contains(request.provider) else { return Decision(events: [], target: s.id, noop: true) }
      let event = GatewayEvent(
        .sandboxProviderDetached(
          .with {
            $0.sandboxID = s.id; $0.provider = request.provider
          }))
      return Decision(events: [event], claims: ["sandbox-id/\(s.id)"], target: s.id)
    }
    guard let s = result.state.sandboxes[result.decision.target] else { throw RPCErrors.notFound("sandbox \(request.sandbox)") }
    return .with {
      $0.sandbox = Wire.sandbox(s, state: result.state)
      $0.detached = !s.providers.contains(request.provider)
    }
  }

  /// The sandbox an attach/detach acts on, checked against `expected_resource_version` (0 = no check).
  func attachmentTarget(_ state: GatewayState, _ scope: Openshell_Datamodel_V1_WorkspaceSelector, _ name: String, _ expected: UInt64) throws -> (
    SandboxRecord, String
  ) {
    let ws = try workspace(scope, state)
    guard let s = state.sandbox(named: name, workspace: ws) else { throw RPCErrors.notFound("sandbox \(ws)/\(name)") }
    if s.phase == .deleting { throw RPCErrors.failedPrecondition("sandbox \(ws)/\(name) is being deleted") }
    if expected != 0 && expected != s.resourceVersion {
      throw RPCError(code: .aborted, message: "sandbox \(ws)/\(name) is at resource version \(s.resourceVersion), not \(expected); re-read it and retry")
    }
    return (s, ws)
  }
}
