// Provider CRUD: CreateProvider, GetProvider, ListProviders and UpdateProvider, with the rules every
// provider RPC follows (the doc comment below). Deletion: ProviderDeletion.swift; credential reads and
// disclosure: ProviderCredentialHandlers.swift; sandbox attachments: SandboxProviderHandlers.swift;
// input checks: ProviderValidation.swift.

import Foundation
import GRPCCore
import Logging
import OpenShellAPI
import Projections

/// Providers and their credentials (openshell-behavior.md §1D, wire-contract.md §10).
///
/// Secrets: every credential value is sealed with the provider's data key (`SecretVault`) before it
/// enters an event; responses carry key names with the value `REDACTED`, except GetProviderCredentials
/// (operator identity only) and GetSandboxProviderEnvironment (a sandbox, for itself only). No error
/// message names a value. Deleting a provider destroys its data key once `provider.deleted` is durable
/// (crypto-shredding).
///
/// Departures from OpenShell v0.0.30:
/// - DeleteProvider refuses while sandboxes use the provider (listing them) unless the request carries
///   the metadata `x-openshell-force: true` (the contract's request has no force field); a forced
///   delete detaches the provider from those sandboxes in the same append.
/// - UpdateProvider records a new value for an existing key as `provider.credential_rotated` (the audit
///   shows who rotated which key when); new keys, removed keys and config as `provider.updated`.
/// - Credential keys must be environment-variable names (`[A-Za-z_][A-Za-z0-9_]*`).
/// - RotateProviderCredential rotates through a refresh strategy; static credentials have none, so
///   it answers FAILED_PRECONDITION pointing at UpdateProvider (the request carries no new value).
extension OpenShellService {
  /// `CreateProvider` RPC: records `provider.created` with credential values sealed under a new data key (a
  /// random name when none is given). Callers: operators and users, not sandboxes. INVALID_ARGUMENT without
  /// credentials or for a bad name; ALREADY_EXISTS for a taken name.
  public func createProvider(request: Openshell_V1_CreateProviderRequest, context: ServerContext) async throws -> Openshell_V1_ProviderResponse {
    let caller = try userCaller("CreateProvider")
    let vault = try requireVault("CreateProvider")
    let p = request.provider
    let type = try providerType(p.type)
    if !p.metadata.name.isEmpty, let v = NameRule.violation(p.metadata.name) {
      throw RPCErrors.invalidArgument(field: "provider.metadata.name", "provider name \(p.metadata.name.debugDescription) \(v)")
    }
    try Self.refuseLabels(p)
    if p.credentials.isEmpty { throw RPCErrors.invalidArgument(field: "provider.credentials", "at least one credential is required") }
    try checkCredentials(p.credentials, field: "provider.credentials", update: false)
    try checkConfig(p.config, field: "provider.config")
    let keyID: String
    do {
      keyID = try vault.createDataKey()
    } catch let e as SecretVault.VaultError where e.errno == ENOSPC || e.errno == EDQUOT {
      throw RPCError(
        code: .resourceExhausted,
        message: "the gateway's disk is full: cannot store the provider's data key; nothing was recorded; free space on the gateway host and retry")
    } catch {
      Logger(label: "openshell.gateway.providers").error("CreateProvider: cannot create a data key: \(error)")
      throw RPCError(code: .internalError, message: "cannot create a data key for the provider (see the gateway log)")
    }
    let result: (state: GatewayState, seqs: ClosedRange<UInt64>?, decision: Decision)
    do {
      result = try await store.execute(
        actor: caller.actor, requestID: request.requestID, rpc: "CreateProvider",
        target: Self.requestTarget(request.workspaceScope, request.provider.metadata.name)
      ) { state in
        let ws = try workspace(request.workspaceScope, state)
        var name = p.metadata.name
        if name.isEmpty {
          repeat { name = Self.randomProviderName() } while state.provider(named: name, workspace: ws) != nil
        }
        guard state.provider(named: name, workspace: ws) == nil else { throw RPCErrors.alreadyExists("provider \(ws)/\(name)") }
        let id = RandomID.uuid()
        let sealed = try sealAll(vault, p.credentials.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, keyID: keyID)
        let event = GatewayEvent(
          .providerCreated(
            .with {
              $0.id = id
              $0.name = name
              $0.workspace = ws
              $0.type = type
              $0.config = p.config
              $0.credentials = sealed
              $0.dataKeyID = keyID
            }))
        return Decision(
          events: [event], claims: ["provider/\(ws)/\(name)"], sharedClaims: ["workspace/\(ws)"], expecting: [.provider(id): .noStream], target: id)
      }
    } catch {
      try? vault.destroyDataKey(keyID)
      throw error
    }
    // A retried request appended nothing: the key made for it is not used.
    if result.seqs == nil { try? vault.destroyDataKey(keyID) }
    guard let created = result.state.providers[result.decision.target] else { throw RPCErrors.notFound("provider \(p.metadata.name)") }
    return .with { $0.provider = Wire.provider(created) }
  }

  /// `GetProvider` RPC: one provider by name in its workspace, credential values redacted. Callers: operators
  /// and users, not sandboxes.
  public func getProvider(request: Openshell_V1_GetProviderRequest, context: ServerContext) async throws -> Openshell_V1_ProviderResponse {
    _ = try userCaller("GetProvider")
    let state = await store.state
    let ws = try workspace(request.workspaceScope, state)
    guard let p = state.provider(named: request.name, workspace: ws) else { throw RPCErrors.notFound("provider \(ws)/\(request.name)") }
    return .with { $0.provider = Wire.provider(p) }
  }

  /// `ListProviders` RPC: providers of a workspace (or all), credential values redacted, paginated. Callers:
  /// operators and users, not sandboxes.
  public func listProviders(request: Openshell_V1_ListProvidersRequest, context: ServerContext) async throws -> Openshell_V1_ListProvidersResponse {
    _ = try userCaller("ListProviders")
    let state = await store.state
    let scope = try listScope(request.workspaceScope, state)
    let sel = try selector(request.labelSelector)
    let items = state.providers.values.filter { (scope == nil || $0.workspace == scope) && sel.matches([:]) }
      .sorted { ($0.workspace, $0.name) < ($1.workspace, $1.name) }
    let page = try Pagination.page(items, key: { "\($0.workspace)/\($0.name)" }, pageSize: request.pageSize, pageToken: request.pageToken)
    return .with {
      $0.providers = page.items.map(Wire.provider); $0.nextPageToken = page.next
    }
  }

  /// `UpdateProvider` RPC: records `provider.updated` (config and credential changes) and
  /// `provider.credential_rotated` per changed value; a no-op when nothing changes. Callers: operators and
  /// users, not sandboxes. INVALID_ARGUMENT for a type change.
  public func updateProvider(request: Openshell_V1_UpdateProviderRequest, context: ServerContext) async throws -> Openshell_V1_ProviderResponse {
    let caller = try userCaller("UpdateProvider")
    let vault = try requireVault("UpdateProvider")
    let p = request.provider
    let name = p.metadata.name
    if name.isEmpty { throw RPCErrors.invalidArgument(field: "provider.metadata.name", "is required") }
    try Self.refuseLabels(p)
    try checkCredentials(p.credentials, field: "provider.credentials", update: true)
    try checkConfig(p.config, field: "provider.config")
    let requestedType = p.type.isEmpty ? nil : try providerType(p.type)
    let result = try await store.execute(
      actor: caller.actor, requestID: request.requestID, rpc: "UpdateProvider",
      target: Self.requestTarget(request.workspaceScope, request.provider.metadata.name)
    ) { state in
      let ws = try workspace(request.workspaceScope, state)
      guard let cur = state.provider(named: name, workspace: ws) else { throw RPCErrors.notFound("provider \(ws)/\(name)") }
      if let requestedType, requestedType != cur.type {
        throw RPCErrors.invalidArgument(field: "provider.type", "provider type cannot be changed; delete and recreate the provider")
      }
      var added: [(String, String)] = []
      var removed: [String] = []
      var rotated: [(String, String)] = []
      for (k, v) in p.credentials.sorted(by: { $0.key < $1.key }) {
        if v.isEmpty {
          if cur.credentials[k] != nil { removed.append(k) }
        } else if let old = cur.credentials[k] {
          // An unchanged value is not a rotation.
          if (try? vault.open(old, keyID: cur.dataKeyID, name: k)) != v { rotated.append((k, v)) }
        } else {
          added.append((k, v))
        }
      }
      var setConfig: [String: String] = [:]
      var removedConfig: [String] = []
      for (k, v) in p.config.sorted(by: { $0.key < $1.key }) {
        if v.isEmpty {
          if cur.config[k] != nil { removedConfig.append(k) }
        } else if cur.config[k] != v {
          setConfig[k] = v
        }
      }
      var events: [GatewayEvent] = []
      if !added.isEmpty || !removed.isEmpty || !setConfig.isEmpty || !removedConfig.isEmpty {
        let sealed = try sealAll(vault, added, keyID: cur.dataKeyID)
        events.append(
          GatewayEvent(
            .providerUpdated(
              .with {
                $0.id = cur.id
                $0.setConfig = setConfig
                $0.removedConfig = removedConfig
                $0.setCredentials = sealed
                $0.removedCredentials = removed
              })))
      }
      for sealed in try sealAll(vault, rotated, keyID: cur.dataKeyID) {
        events.append(
          GatewayEvent(
            .providerCredentialRotated(
              .with {
                $0.id = cur.id; $0.credential = sealed
              })))
      }
      if events.isEmpty { return Decision(events: [], target: cur.id, noop: true) }
      return Decision(events: events, claims: ["provider-id/\(cur.id)"], target: cur.id)
    }
    guard let updated = result.state.providers[result.decision.target] else { throw RPCErrors.notFound("provider \(name)") }
    return .with { $0.provider = Wire.provider(updated) }
  }
}
