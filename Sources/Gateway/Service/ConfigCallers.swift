// Who may call the config RPCs and which sandbox they act on: dual-mode callers (users/operators or the
// sandbox itself), sandbox resolution, and the initial revision derived for sandboxes of older logs.

import GRPCCore
import OpenShellAPI
import Projections

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
}
