import EventLog
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
  /// Limits on a provider's maps.
  enum ProviderLimits {
    static let maxEntries = 64
    static let maxKeyLength = 256
    static let maxCredentialValueBytes = 16 * 1024
    static let maxConfigValueBytes = 4 * 1024
    static let maxTypeLength = 63
  }

  /// gRPC metadata that lets DeleteProvider remove a provider still used by sandboxes.
  public static let forceDeleteHeader = "x-openshell-force"
  /// Response metadata of a forced DeleteProvider: the inference routes it deleted, comma-separated.
  public static let removedRoutesHeader = "x-openshell-removed-inference-routes"

  enum ProviderCall {
    @TaskLocal static var force = false
  }

  func requireVault(_ rpc: String) throws -> SecretVault {
    guard let vault else { throw RPCErrors.failedPrecondition("\(rpc): this gateway has no secret vault configured") }
    return vault
  }

  /// Checks a credentials map. Messages name keys, never values.
  func checkCredentials(_ map: [String: String], field: String, update: Bool) throws {
    if map.count > ProviderLimits.maxEntries { throw RPCErrors.invalidArgument(field: field, "at most \(ProviderLimits.maxEntries) credentials") }
    for (k, v) in map {
      guard ProviderCatalog.isEnvironmentName(k), k.utf8.count <= ProviderLimits.maxKeyLength else {
        throw RPCErrors.invalidArgument(
          field: field, "credential key \(k.debugDescription) must match [A-Za-z_][A-Za-z0-9_]* and be at most \(ProviderLimits.maxKeyLength) characters")
      }
      if v.isEmpty && !update { throw RPCErrors.invalidArgument(field: field, "credential \(k) has an empty value") }
      if v.utf8.count > ProviderLimits.maxCredentialValueBytes {
        throw RPCErrors.invalidArgument(field: field, "credential \(k) is longer than \(ProviderLimits.maxCredentialValueBytes) bytes")
      }
    }
  }

  func checkConfig(_ map: [String: String], field: String) throws {
    if map.count > ProviderLimits.maxEntries { throw RPCErrors.invalidArgument(field: field, "at most \(ProviderLimits.maxEntries) config entries") }
    for (k, v) in map {
      if k.isEmpty || k.utf8.count > ProviderLimits.maxKeyLength || k.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
        throw RPCErrors.invalidArgument(
          field: field, "config key \(k.debugDescription) must be 1-\(ProviderLimits.maxKeyLength) characters without control characters")
      }
      if v.utf8.count > ProviderLimits.maxConfigValueBytes {
        throw RPCErrors.invalidArgument(field: field, "config value of \(k) is longer than \(ProviderLimits.maxConfigValueBytes) bytes")
      }
    }
  }

  /// The canonical type: known names and aliases case-insensitively, other syntactically valid names as given.
  func providerType(_ raw: String) throws -> String {
    if raw.isEmpty { throw RPCErrors.invalidArgument(field: "provider.type", "is required") }
    if let t = ProviderCatalog.normalize(raw) { return t }
    let ok =
      raw.utf8.count <= ProviderLimits.maxTypeLength
      && raw.unicodeScalars.allSatisfy {
        $0.isASCII && (CharacterSet.lowercaseLetters.contains($0) || CharacterSet.decimalDigits.contains($0) || "-_.".unicodeScalars.contains($0))
      }
    guard ok else {
      throw RPCErrors.invalidArgument(
        field: "provider.type", "unknown provider type \(raw.debugDescription); known types: \(ProviderCatalog.types.joined(separator: ", "))")
    }
    return raw
  }

  static func randomProviderName() -> String {
    String((0..<6).map { _ in "abcdefghijklmnopqrstuvwxyz".randomElement()! })
  }

  func sealAll(_ vault: SecretVault, _ pairs: [(String, String)], keyID: String) throws -> [Openshell_Events_V1_SealedValue] {
    try pairs.map { k, v in
      let sealed: Data
      do { sealed = try vault.seal(v, keyID: keyID, name: k) } catch {
        throw RPCError(code: .internalError, message: "credential \(k) could not be sealed")
      }
      return .with {
        $0.key = k; $0.sealed = sealed
      }
    }
  }

  /// Provider labels are not stored (the provider events have no labels yet), so a request that sets
  /// them is refused rather than answered OK with the labels dropped (issue 16). A label selector on
  /// ListProviders matches providers as label-less.
  /// - Throws: INVALID_ARGUMENT naming `provider.metadata.labels`.
  static func refuseLabels(_ p: Openshell_Datamodel_V1_Provider) throws {
    guard !p.metadata.labels.isEmpty else { return }
    throw RPCErrors.invalidArgument(
      field: "provider.metadata.labels",
      "provider labels are not supported yet (got \(p.metadata.labels.keys.sorted().joined(separator: ", "))); create the provider without labels")
  }

  // MARK: CRUD

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

  public func getProvider(request: Openshell_V1_GetProviderRequest, context: ServerContext) async throws -> Openshell_V1_ProviderResponse {
    _ = try userCaller("GetProvider")
    let state = await store.state
    let ws = try workspace(request.workspaceScope, state)
    guard let p = state.provider(named: request.name, workspace: ws) else { throw RPCErrors.notFound("provider \(ws)/\(request.name)") }
    return .with { $0.provider = Wire.provider(p) }
  }

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

  /// DeleteProvider with access to the request metadata (`x-openshell-force`).
  public func deleteProvider(request: ServerRequest<Openshell_V1_DeleteProviderRequest>, context: ServerContext) async throws -> ServerResponse<
    Openshell_V1_DeleteProviderResponse
  > {
    let force = request.metadata[stringValues: Self.forceDeleteHeader].contains { ["true", "1", "yes"].contains($0.lowercased()) }
    let (message, removedRoutes) = try await deleteProvider(request.message, force: force)
    // The contract's response has no room for it: a forced delete names the inference routes it deleted in the
    // response metadata, so the CLI can say so.
    var metadata: Metadata = [:]
    if !removedRoutes.isEmpty { metadata.addString(removedRoutes.joined(separator: ","), forKey: Self.removedRoutesHeader) }
    return ServerResponse(message: message, metadata: metadata)
  }

  public func deleteProvider(request: Openshell_V1_DeleteProviderRequest, context: ServerContext) async throws -> Openshell_V1_DeleteProviderResponse {
    try await deleteProvider(request, force: ProviderCall.force).response
  }

  /// The delete itself; also returns the inference routes a forced delete removed (sorted).
  private func deleteProvider(_ request: Openshell_V1_DeleteProviderRequest, force: Bool) async throws -> (
    response: Openshell_V1_DeleteProviderResponse, removedRoutes: [String]
  ) {
    let caller = try userCaller("DeleteProvider")
    let vault = try requireVault("DeleteProvider")
    let before = await store.state
    let result = try await store.execute(
      actor: caller.actor, requestID: request.requestID, rpc: "DeleteProvider", target: Self.requestTarget(request.workspaceScope, request.name)
    ) { state in
      let ws = try workspace(request.workspaceScope, state)
      guard let p = state.provider(named: request.name, workspace: ws) else {
        if request.allowMissing { return Decision(events: []) }
        throw RPCErrors.notFound("provider \(ws)/\(request.name)")
      }
      let users = ProviderEnvironmentResolver.users(of: p.name, workspace: ws, in: state)
      if !users.isEmpty && !force {
        throw RPCErrors.failedPrecondition(
          "provider \(ws)/\(p.name) is used by sandbox\(users.count == 1 ? "" : "es") \(users.map(\.name).joined(separator: ", ")); "
            + "detach it or delete the sandboxes first, or delete with --force (which detaches it)")
      }
      // Inference routes name providers of the default workspace; a route must not outlive its provider.
      let routes =
        ws == InferenceService.providerWorkspace
        ? state.inferenceRoutes.values.filter { $0.provider == p.name }.map(\.route).sorted() : []
      if !routes.isEmpty && !force {
        throw RPCErrors.failedPrecondition(
          "provider \(ws)/\(p.name) is used by inference route\(routes.count == 1 ? "" : "s") \(routes.joined(separator: ", ")); "
            + "point the route at another provider (openshell inference set) or delete it (openshell inference delete) first, or delete with --force (which deletes the route)"
        )
      }
      var events = users.map { s in
        GatewayEvent(
          .sandboxProviderDetached(
            .with {
              $0.sandboxID = s.id; $0.provider = p.name
            }))
      }
      events += routes.map { r in GatewayEvent(.inferenceRouteDeleted(.with { $0.route = r })) }
      events.append(
        GatewayEvent(
          .providerDeleted(
            .with {
              $0.id = p.id; $0.name = p.name; $0.workspace = p.workspace
            })))
      if !routes.isEmpty {
        var next = state
        for (i, e) in events.enumerated() { next.apply(e, seq: state.lastSeq + UInt64(i) + 1, timestampNs: 0) }
        events += InferenceService.publication(next)
      }
      return Decision(
        events: events,
        claims: ["provider/\(ws)/\(p.name)", "provider-id/\(p.id)"] + users.map { "sandbox-id/\($0.id)" } + routes.map { "inference-route/\($0)" },
        target: p.id)
    }
    let id = result.decision.target
    guard result.seqs != nil || result.decision.noop else { return (.with { $0.outcome = .alreadyAbsent }, []) }
    let removedRoutes = result.decision.events.compactMap { e -> String? in
      if case .inferenceRouteDeleted(let r)? = e.kind { return r.route } else { return nil }
    }
    // The event is durable: destroy the data key (crypto-shredding). A crash before this line leaves an
    // orphan key that the start-up janitor destroys.
    let known = before.providers[id].map { (name: $0.name, workspace: $0.workspace, keyID: $0.dataKeyID) }
    if let p = known ?? (try? priorProvider(id)) {
      do { try vault.destroyDataKey(p.keyID) } catch {
        throw RPCError(code: .internalError, message: "provider deleted but its data key could not be destroyed: \(error)")
      }
    }
    return (.with { $0.outcome = .completed }, removedRoutes)
  }

  /// Name, workspace and data key of a provider as created (for a delete decided against a state
  /// newer than the one read before it).
  private func priorProvider(_ id: String) throws -> (name: String, workspace: String, keyID: String)? {
    var found: (name: String, workspace: String, keyID: String)?
    try store.log.forEach(from: 1, filter: EventFilter(types: ["provider.created"])) { record in
      if case .providerCreated(let e)? = try GatewayEvent.decode(record).kind, e.id == id {
        found = (e.name, e.workspace, e.dataKeyID)
      }
    }
    return found
  }

  // MARK: secrets

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
    for k in keys where !ProviderCatalog.isEnvironmentName(k) || k.count > 256 {
      throw RPCErrors.invalidArgument(field: "credential_keys", "key \(k.debugDescription) must match [A-Za-z_][A-Za-z0-9_]* (at most 256 characters)")
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

  // MARK: sandbox attachments

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

extension Wire {
  /// A provider as every response but GetProviderCredentials shows it: values `REDACTED`.
  static func provider(_ p: ProviderRecord) -> Openshell_Datamodel_V1_Provider {
    var out = Openshell_Datamodel_V1_Provider()
    out.metadata.id = p.id
    out.metadata.name = p.name
    out.metadata.workspace = p.workspace
    out.metadata.createdTime = timestamp(ns: p.createdNs)
    out.metadata.resourceVersion = p.resourceVersion
    out.type = p.type
    out.credentials = Dictionary(uniqueKeysWithValues: p.credentials.keys.map { ($0, ProviderCatalog.redacted) })
    out.config = p.config
    return out
  }
}
