import GRPCCore

extension OpenShellService {
  /// Authorizes a supervisor-facing RPC: the caller must be the sandbox `claimed` (its certificate
  /// `CN=sandbox:<id>, OU=sandbox`, or — only when the caller presented no certificate — the sandbox
  /// token of that id). Operators and users are refused: these RPCs speak for a sandbox.
  /// - Returns: the sandbox id.
  func sandboxCaller(_ rpc: String, claimed: String) throws -> String {
    let caller = CallerIdentity.current
    switch caller.kind {
    case .sandbox(let id):
      guard claimed.isEmpty || claimed == id else {
        throw RPCErrors.permissionDenied("sandbox \(id) may not call \(rpc) for sandbox \(claimed)")
      }
      return id
    case .anonymous:
      guard let hub, hub.verify(token: SandboxTokenInterceptor.current, claimedSandboxID: claimed) else {
        throw RPCErrors.permissionDenied("\(rpc) is only available to sandbox supervisors")
      }
      return claimed
    case .operator, .user:
      throw RPCErrors.permissionDenied("\(rpc) is only available to sandbox supervisors, not to \(caller.actor)")
    }
  }
}
