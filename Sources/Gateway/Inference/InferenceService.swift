import Crypto
import Foundation
import GRPCCore
import Logging
import OpenShellAPI
import Projections
import Synchronization

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// `openshell.inference.v1.Inference` (Protos/inference.proto): inference routes, their resolution into
/// bundles for sandboxes, and the push of new bundle revisions (openshell-behavior.md §1F, §6).
public final class InferenceService: Openshell_Inference_V1_Inference.SimpleServiceProtocol, Sendable {
  public static let userRoute = "inference.local"
  public static let systemRoute = "sandbox-system"
  public static let supportedTypes = ["openai", "anthropic", "nvidia"]
  /// Provider workspace routes resolve against (inference is gateway-wide, as in OpenShell v0.0.30).
  static let providerWorkspace = GatewayState.defaultWorkspace

  let store: GatewayStore
  let vault: SecretVault?
  let hub: SupervisorHub?
  /// Verification timeout of `SetInferenceRoute` (OpenShell: 30 s).
  let probeTimeout: TimeInterval
  private let watchers = Mutex<[UUID: AsyncStream<Void>.Continuation]>([:])
  private let logger = Logger(label: "openshell.gateway.inference")

  /// The republisher's checkpoint in the log (``ProviderChangeFeed``).
  public static let checkpointName = "inference-republish"

  public init(store: GatewayStore, vault: SecretVault?, hub: SupervisorHub?, probeTimeout: TimeInterval = 30) {
    self.store = store
    self.vault = vault
    self.hub = hub
    self.probeTimeout = probeTimeout
  }

  /// Republishes the bundle after provider changes (credential rotation, base URL, deletion) and
  /// wakes bundle watchers. Runs until cancelled.
  public func run() async {
    // Publication is part of each inference command; provider changes (a rotated key, a new base URL)
    // follow the log from a checkpoint, so a crash between a change and its republication is caught up at
    // start. Once more at start in case the bundle is stale for another reason (an older gateway's log).
    await republishIfChanged()
    await ProviderChangeFeed.follow(store: store, checkpoint: Self.checkpointName) { _ in
      await self.republishIfChanged()
    }
  }

  func republishIfChanged() async {
    do {
      let result = try await store.execute(actor: "system", requestID: "") { state in
        Decision(events: Self.publication(state))
      }
      if result.seqs != nil { notifyWatchers() }
    } catch {
      logger.warning("inference bundle publication failed: \(error)")
    }
  }

  func notifyWatchers() {
    for c in watchers.withLock({ Array($0.values) }) { c.yield() }
  }

  // MARK: resolution

  struct Resolved {
    var name: String
    var baseURL: String
    var protocols: [String]
    var providerType: String
    var model: String
    var timeout: UInt32
    var keyName: String
    var sealedKey: Data
    var provider: ProviderRecord
  }

  static func routeName(_ given: String) throws -> String {
    switch given {
    case "", userRoute: return userRoute
    case systemRoute: return systemRoute
    default:
      throw RPCErrors.invalidArgument(field: "route_name", "unknown route '\(given)' (expected '\(userRoute)' or '\(systemRoute)')")
    }
  }

  static func baseURL(_ p: ProviderRecord) -> String {
    let (key, fallback): (String, String) =
      switch p.type {
      case "anthropic": ("ANTHROPIC_BASE_URL", "https://api.anthropic.com/v1")
      case "nvidia": ("NVIDIA_BASE_URL", "https://integrate.api.nvidia.com/v1")
      default: ("OPENAI_BASE_URL", "https://api.openai.com/v1")
      }
    let configured = (p.config[key] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    let url = configured.isEmpty ? fallback : configured
    return url.hasSuffix("/") ? String(url.dropLast()) : url
  }

  static func protocols(_ type: String) -> [String] {
    type == "anthropic"
      ? ["anthropic_messages", "model_discovery"]
      : ["openai_chat_completions", "openai_completions", "openai_responses", "model_discovery"]
  }

  /// The provider's API key: the preferred variable for its type, else the first credential by name.
  static func keyName(_ p: ProviderRecord) -> String? {
    let preferred = ["openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "nvidia": "NVIDIA_API_KEY"][p.type] ?? ""
    if p.credentials[preferred] != nil { return preferred }
    return p.credentials.keys.sorted().first
  }

  /// Resolves one route against the current providers (errors as OpenShell's GetInferenceBundle).
  static func resolve(route: String, provider: String, model: String, timeout: UInt32, state: GatewayState) throws -> Resolved {
    guard !provider.isEmpty, !model.isEmpty else {
      throw RPCErrors.failedPrecondition("inference route '\(route)' has no provider or model")
    }
    guard let p = state.provider(named: provider, workspace: providerWorkspace) else {
      throw RPCErrors.failedPrecondition("configured provider '\(provider)' was not found")
    }
    guard supportedTypes.contains(p.type.lowercased()) else {
      throw RPCErrors.invalidArgument(
        field: "provider_name", "provider '\(provider)' has unsupported type '\(p.type)' (supported: openai, anthropic, nvidia)")
    }
    guard let keyName = keyName(p), let sealed = p.credentials[keyName] else {
      throw RPCErrors.failedPrecondition(
        "provider '\(provider)' has no API key credential (expected \(["openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "nvidia": "NVIDIA_API_KEY"][p.type] ?? "an API key"))"
      )
    }
    return Resolved(
      name: route, baseURL: baseURL(p), protocols: protocols(p.type.lowercased()), providerType: p.type.lowercased(), model: model,
      timeout: timeout, keyName: keyName, sealedKey: sealed, provider: p)
  }

  /// Every configured route, resolved, user route first.
  static func resolveAll(_ state: GatewayState) throws -> [Resolved] {
    try [userRoute, systemRoute].compactMap { name in
      guard let r = state.inferenceRoutes[name] else { return nil }
      return try resolve(route: name, provider: r.provider, model: r.model, timeout: r.timeoutSeconds, state: state)
    }
  }

  /// The bundle revision: 16 hex digits of SHA-256 over the resolved routes, with the digest of the
  /// sealed credential in place of the key (rotation changes it; no plaintext is involved).
  static func revision(_ routes: [Resolved]) -> String {
    var h = SHA256()
    for r in routes {
      let sealedDigest = SHA256.hash(data: r.sealedKey).map { String(format: "%02x", $0) }.joined()
      let fields = [r.name, r.baseURL, r.protocols.joined(separator: ","), r.model, r.providerType, String(r.timeout), r.keyName, sealedDigest]
      h.update(data: Data((fields.joined(separator: "\u{1f}") + "\u{1e}").utf8))
    }
    return h.finalize().prefix(8).map { String(format: "%02x", $0) }.joined()
  }

  /// `inference_bundle.published` when the resolvable bundle's revision differs from the last one
  /// published; nothing while a route cannot be resolved (sandboxes keep their cached routes).
  static func publication(_ state: GatewayState) -> [GatewayEvent] {
    guard let routes = try? resolveAll(state) else { return [] }
    let rev = routes.isEmpty ? "" : revision(routes)
    guard rev != state.inferenceBundleRevision else { return [] }
    return [
      GatewayEvent(
        .inferenceBundlePublished(
          .with {
            $0.revision = rev; $0.routes = routes.map(\.name)
          }))
    ]
  }

  func bundle(_ state: GatewayState) throws -> Openshell_Inference_V1_GetInferenceBundleResponse {
    try bundle(routes: try Self.resolveAll(state))
  }

  /// The bundle of already resolved `routes` (API keys decrypted here).
  func bundle(routes: [Resolved]) throws -> Openshell_Inference_V1_GetInferenceBundleResponse {
    guard let vault else { throw RPCError(code: .failedPrecondition, message: "this gateway has no secret vault") }
    var out = Openshell_Inference_V1_GetInferenceBundleResponse()
    for r in routes {
      let key: String
      do { key = try vault.open(r.sealedKey, keyID: r.provider.dataKeyID, name: r.keyName) } catch {
        throw RPCErrors.undecryptable(key: r.keyName, provider: r.provider.name, error)
      }
      out.routes.append(
        .with {
          $0.name = r.name
          $0.baseURL = r.baseURL
          $0.protocols = r.protocols
          $0.apiKey = key
          $0.modelID = r.model
          $0.providerType = r.providerType
          $0.timeoutSecs = r.timeout
        })
    }
    out.revision = routes.isEmpty ? "" : Self.revision(routes)
    out.generatedAtMs = Int64(Date().timeIntervalSince1970 * 1000)
    return out
  }

  static func wire(_ r: InferenceRouteRecord) -> Openshell_Inference_V1_InferenceRoute {
    .with {
      $0.name = r.route
      $0.providerName = r.provider
      $0.modelID = r.model
      $0.timeoutSecs = r.timeoutSeconds
      $0.version = r.version ?? 1
      $0.verified = r.verified
      $0.updatedAtMs = Int64(r.updatedNs / 1_000_000)
    }
  }

  // MARK: authorization

  func userCaller(_ rpc: String) throws -> CallerIdentity {
    let caller = CallerIdentity.current
    if caller.sandboxID != nil || (caller.kind == .anonymous && !SandboxTokenInterceptor.current.isEmpty) {
      throw RPCErrors.permissionDenied("\(rpc) is not available to sandbox identities")
    }
    return caller
  }

  /// Bundles carry plaintext keys: sandbox identities only.
  func sandboxCaller(_ rpc: String, claimed: String) throws -> String {
    let caller = CallerIdentity.current
    if let id = caller.sandboxID {
      guard claimed.isEmpty || claimed == id else { throw RPCErrors.permissionDenied("sandbox \(id) may not call \(rpc) for sandbox \(claimed)") }
      return id
    }
    if caller.kind == .anonymous, let hub, hub.verify(token: SandboxTokenInterceptor.current, claimedSandboxID: claimed) { return claimed }
    throw RPCErrors.permissionDenied("\(rpc) is only available to sandbox identities (the bundle contains provider credentials)")
  }

  // MARK: RPCs

  public func setInferenceRoute(request: Openshell_Inference_V1_SetInferenceRouteRequest, context: ServerContext) async throws
    -> Openshell_Inference_V1_SetInferenceRouteResponse
  {
    let caller = try userCaller("SetInferenceRoute")
    let route = try Self.routeName(request.routeName)
    guard !request.providerName.isEmpty else { throw RPCErrors.invalidArgument(field: "provider_name", "provider_name is required") }
    guard !request.modelID.isEmpty else { throw RPCErrors.invalidArgument(field: "model_id", "model_id is required") }
    let state = await store.state
    guard state.provider(named: request.providerName, workspace: Self.providerWorkspace) != nil else {
      throw RPCErrors.failedPrecondition("provider '\(request.providerName)' not found; create it first with 'openshell provider create'")
    }
    let resolved = try Self.resolve(route: route, provider: request.providerName, model: request.modelID, timeout: request.timeoutSecs, state: state)
    var validated: [Openshell_Inference_V1_ValidatedEndpoint] = []
    if !request.noVerify {
      guard let vault else { throw RPCError(code: .failedPrecondition, message: "this gateway has no secret vault") }
      let key: String
      do { key = try vault.open(resolved.sealedKey, keyID: resolved.provider.dataKeyID, name: resolved.keyName) } catch {
        throw RPCErrors.undecryptable(key: resolved.keyName, provider: resolved.provider.name, error)
      }
      let url = resolved.baseURL + "/models"
      if let problem = await Self.probe(url: url, type: resolved.providerType, key: key, timeout: probeTimeout) {
        throw RPCErrors.failedPrecondition(
          "failed to verify inference endpoint for provider '\(request.providerName)' and model '\(request.modelID)' at '\(url)': \(problem). "
            + "Next steps: check the provider's base URL and API key (openshell provider get \(request.providerName)), "
            + "or retry with '--no-verify' to skip verification")
      }
      validated = [
        .with {
          $0.url = url; $0.protocol = "model_discovery"
        }
      ]
    }
    let result = try await store.execute(actor: caller.actor, requestID: "") { state in
      // Re-resolve against the state the events are appended to (the provider may have changed).
      _ = try Self.resolve(route: route, provider: request.providerName, model: request.modelID, timeout: request.timeoutSecs, state: state)
      var next = state
      let set = GatewayEvent(
        .inferenceRouteSet(
          .with {
            $0.route = route
            $0.provider = request.providerName
            $0.model = request.modelID
            $0.timeoutSeconds = request.timeoutSecs
            $0.verified = !request.noVerify
          }))
      next.apply(set, seq: state.lastSeq + 1, timestampNs: 0)
      return Decision(events: [set] + Self.publication(next), claims: ["inference-route/\(route)"])
    }
    notifyWatchers()
    guard let stored = result.state.inferenceRoutes[route] else {
      throw RPCError(code: .internalError, message: "route was recorded but is not in the projection")
    }
    return .with {
      $0.route = Self.wire(stored)
      $0.validationPerformed = !request.noVerify
      $0.validatedEndpoints = validated
    }
  }

  public func getInferenceRoute(request: Openshell_Inference_V1_GetInferenceRouteRequest, context: ServerContext) async throws
    -> Openshell_Inference_V1_GetInferenceRouteResponse
  {
    _ = try userCaller("GetInferenceRoute")
    let route = try Self.routeName(request.routeName)
    guard let r = await store.state.inferenceRoutes[route] else {
      throw RPCError(
        code: .notFound,
        message:
          "inference route '\(route)' is not configured; run 'openshell inference set\(route == Self.systemRoute ? " --system" : "") --provider <name> --model <id>'"
      )
    }
    return .with { $0.route = Self.wire(r) }
  }

  public func deleteInferenceRoute(request: Openshell_Inference_V1_DeleteInferenceRouteRequest, context: ServerContext) async throws
    -> Openshell_Inference_V1_DeleteInferenceRouteResponse
  {
    let caller = try userCaller("DeleteInferenceRoute")
    let route = try Self.routeName(request.routeName)
    let result = try await store.execute(actor: caller.actor, requestID: "") { state in
      guard state.inferenceRoutes[route] != nil else { return Decision(events: [], noop: true) }
      var next = state
      var events = [GatewayEvent(.inferenceRouteDeleted(.with { $0.route = route }))]
      next.apply(events[0], seq: state.lastSeq + 1, timestampNs: 0)
      events += Self.publication(next)
      return Decision(events: events, claims: ["inference-route/\(route)"])
    }
    if !result.decision.noop { notifyWatchers() }
    return .with { $0.deleted = !result.decision.noop }
  }

  public func getInferenceBundle(request: Openshell_Inference_V1_GetInferenceBundleRequest, context: ServerContext) async throws
    -> Openshell_Inference_V1_GetInferenceBundleResponse
  {
    let id = try sandboxCaller("GetInferenceBundle", claimed: request.sandboxID)
    let routes = try Self.resolveAll(await store.state)
    let b = try bundle(routes: routes)
    try await recordDisclosure(routes, rpc: "GetInferenceBundle", sandboxID: id)
    return b
  }

  /// Records which providers' API keys the bundle of `routes` hands to sandbox `sandboxID` (names only; issue 12).
  func recordDisclosure(_ routes: [Resolved], rpc: String, sandboxID: String) async throws {
    try await AuditRecorder(store: store).disclosed(
      rpc: rpc, recipient: "sandbox:\(sandboxID)", sandboxID: sandboxID,
      providers: Array(Set(routes.map(\.provider.name))).sorted(), keys: Array(Set(routes.map(\.keyName))))
  }

  public func watchInferenceBundle(
    request: Openshell_Inference_V1_GetInferenceBundleRequest, response: RPCWriter<Openshell_Inference_V1_GetInferenceBundleResponse>, context: ServerContext
  ) async throws {
    let sandboxID = try sandboxCaller("WatchInferenceBundle", claimed: request.sandboxID)
    let (wakeups, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    let id = RandomID.make()
    watchers.withLock { $0[id] = continuation }
    defer { _ = watchers.withLock { $0.removeValue(forKey: id) } }
    var last: String?
    continuation.yield()
    for await _ in wakeups {
      // An unresolvable bundle keeps the sandbox on its cached routes (as OpenShell's refresh errors).
      guard let routes = try? Self.resolveAll(await store.state), let b = try? bundle(routes: routes) else { continue }
      if b.revision == last { continue }
      try await recordDisclosure(routes, rpc: "WatchInferenceBundle", sandboxID: sandboxID)
      try await response.write(b)
      last = b.revision
    }
  }

  // MARK: verification

  /// GET `url` with the provider key; nil when the endpoint answered 2xx, else what went wrong.
  static func probe(url: String, type: String, key: String, timeout: TimeInterval) async -> String? {
    guard let u = URL(string: url), u.scheme == "http" || u.scheme == "https" else { return "invalid URL" }
    var request = URLRequest(url: u, timeoutInterval: timeout)
    request.httpMethod = "GET"
    if type == "anthropic" {
      request.setValue(key, forHTTPHeaderField: "x-api-key")
      request.setValue("2023-06-01", forHTTPHeaderField: "anthropic-version")
    } else {
      request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
    }
    let config = URLSessionConfiguration.ephemeral
    config.timeoutIntervalForRequest = timeout
    config.timeoutIntervalForResource = timeout
    let session = URLSession(configuration: config)
    defer { session.finishTasksAndInvalidate() }
    do {
      let (data, response) = try await session.data(for: request)
      guard let http = response as? HTTPURLResponse else { return "not an HTTP response" }
      guard (200..<300).contains(http.statusCode) else {
        let body = String(decoding: data.prefix(200), as: UTF8.self).replacingOccurrences(of: "\n", with: " ")
        return "HTTP \(http.statusCode)\(body.isEmpty ? "" : " (\(body))")"
      }
      return nil
    } catch {
      return (error as NSError).localizedDescription
    }
  }
}
