// Credential reads and disclosure: GetProviderCredentials (operator identity only),
// RotateProviderCredential (static credentials: points at UpdateProvider) and
// GetSandboxProviderEnvironment (a sandbox's supervisor, for its own sandbox only).

import GRPCCore
import OpenShellAPI

extension OpenShellService {
  /// Operator identity only (mTLS client certificate with `OU=operator`). Returns exactly the
  /// requested keys, or an error.
  public func getProviderCredentials(request: Openshell_V1_GetProviderCredentialsRequest, context: ServerContext) async throws
    -> Openshell_V1_GetProviderCredentialsResponse
  {
    let caller = CallerIdentity.current
    guard caller.isOperator else {
      throw RPCErrors.permissionDenied(
        "GetProviderCredentials is only available to the operator identity (mTLS client certificate with OU=operator), not to \(caller.actor)")
    }
    let vault = try requireVault("GetProviderCredentials")
    if request.name.isEmpty || request.name.utf8.count > 253 { throw RPCErrors.invalidArgument(field: "name", "must be 1-253 bytes") }
    let keys = request.credentialKeys
    guard (1...32).contains(keys.count) else { throw RPCErrors.invalidArgument(field: "credential_keys", "request 1-32 keys") }
    guard Set(keys).count == keys.count else { throw RPCErrors.invalidArgument(field: "credential_keys", "keys must be unique") }
    // Bytes of UTF-8, as every other provider key limit (checkCredentials, checkConfig) counts.
    for k in keys where !ProviderCatalog.isEnvironmentName(k) || k.utf8.count > ProviderLimits.maxKeyLength {
      throw RPCErrors.invalidArgument(
        field: "credential_keys", "key \(k.debugDescription) must match [A-Za-z_][A-Za-z0-9_]* (at most \(ProviderLimits.maxKeyLength) bytes)")
    }
    if request.hasMinimumRemainingLifetime {
      let d = request.minimumRemainingLifetime
      guard d.seconds >= 0, d.nanos >= 0, d.seconds < 86400 || (d.seconds == 86400 && d.nanos == 0) else {
        throw RPCErrors.invalidArgument(field: "minimum_remaining_lifetime", "must be between 0 and 24h")
      }
      // Static credentials never expire, so every lifetime is satisfied.
    }
    let state = await store.state
    let ws = try workspace(request.workspaceScope, state)
    guard let p = state.provider(named: request.name, workspace: ws) else { throw RPCErrors.notFound("provider \(ws)/\(request.name)") }
    let missing = keys.filter { p.credentials[$0] == nil }
    if !missing.isEmpty {
      throw RPCErrors.notFound("credential\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) of provider \(ws)/\(p.name)")
    }
    var out: [String: Openshell_V1_ProviderCredentialValue] = [:]
    for k in keys {
      do {
        let value = try vault.open(p.credentials[k]!, keyID: p.dataKeyID, name: k)
        out[k] = .with { $0.value = value }
      } catch {
        throw RPCErrors.undecryptable(key: k, provider: p.name, error)
      }
    }
    try await audit.disclosed(rpc: "GetProviderCredentials", recipient: CallerIdentity.current.actor, sandboxID: "", providers: [p.name], keys: keys)
    return .with { $0.credentials = out }
  }

  /// `RotateProviderCredential` RPC: NOT_FOUND for an unknown provider or key, otherwise FAILED_PRECONDITION:
  /// credentials are static (no refresh strategy), rotated with UpdateProvider. Callers: operators and users,
  /// not sandboxes. Records nothing.
  public func rotateProviderCredential(request: Openshell_V1_RotateProviderCredentialRequest, context: ServerContext) async throws
    -> Openshell_V1_RotateProviderCredentialResponse
  {
    _ = try userCaller("RotateProviderCredential")
    let state = await store.state
    let ws = try workspace(request.workspaceScope, state)
    guard let p = state.provider(named: request.provider, workspace: ws) else { throw RPCErrors.notFound("provider \(ws)/\(request.provider)") }
    guard p.credentials[request.credentialKey] != nil else { throw RPCErrors.notFound("credential \(request.credentialKey) of provider \(ws)/\(p.name)") }
    throw RPCErrors.failedPrecondition(
      "credential \(request.credentialKey) of provider \(ws)/\(p.name) is static (no refresh strategy is configured); "
        + "rotate it with UpdateProvider: openshell provider update \(p.name) --credential \(request.credentialKey)=NEW_VALUE")
  }

  /// A sandbox's supervisor, for its own sandbox only (PERMISSION_DENIED otherwise).
  public func getSandboxProviderEnvironment(request: Openshell_V1_GetSandboxProviderEnvironmentRequest, context: ServerContext) async throws
    -> Openshell_V1_GetSandboxProviderEnvironmentResponse
  {
    let id = try sandboxCaller("GetSandboxProviderEnvironment", claimed: request.sandboxID)
    let vault = try requireVault("GetSandboxProviderEnvironment")
    let env = try ProviderEnvironmentResolver.resolve(sandboxID: id, state: await store.state, vault: vault)
    try await audit.disclosed(
      rpc: "GetSandboxProviderEnvironment", recipient: "sandbox:\(id)", sandboxID: id, providers: env.providers,
      keys: Array(env.values.keys))
    return .with {
      $0.environment = env.values
      $0.providerEnvRevision = env.revision
    }
  }
}
