// The inference service: its state, bundle publication after provider changes, who may call it, and the
// delivery of bundles to sandboxes (GetInferenceBundle, WatchInferenceBundle). Route resolution and the
// bundle: InferenceResolution.swift; route RPCs and endpoint verification: InferenceRouteHandlers.swift.

import Foundation
import GRPCCore
import Logging
import OpenShellAPI
import Projections
import Synchronization

/// `openshell.inference.v1.Inference` (Protos/inference.proto): inference routes, their resolution into
/// bundles for sandboxes, and the push of new bundle revisions (openshell-behavior.md §1F, §6).
public final class InferenceService: Openshell_Inference_V1_Inference.SimpleServiceProtocol, Sendable {
  /// Route name of the user-facing endpoint sandboxes call (`https://inference.local`).
  public static let userRoute = "inference.local"
  /// Route name of the system route (`openshell inference set --system`), for platform functions, not user code
  /// (openshell-behavior.md §1F).
  public static let systemRoute = "sandbox-system"
  /// Provider types a route may use; any other is INVALID_ARGUMENT when the route is set or resolved
  /// (openshell-behavior.md §1F).
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

  /// A service over `store`; without `vault` no bundle can be built and routes cannot be verified.
  /// `probeTimeout`: seconds the endpoint check of SetInferenceRoute may take (OpenShell: 30 s).
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

  // MARK: bundle delivery

  /// `GetInferenceBundle` RPC: the resolved routes with their plaintext API keys, recorded as an
  /// `audit.credentials_disclosed` event (provider and key names only). Callers: the sandbox itself only.
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

  /// `WatchInferenceBundle` RPC: streams the bundle now and again whenever its revision changes, recording each
  /// disclosure as GetInferenceBundle does. Callers: the sandbox itself only. Ends when the caller cancels.
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
}
