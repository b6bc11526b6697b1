// DeleteProvider: refusal while sandboxes or inference routes use the provider, the forced delete that
// detaches and removes them (`x-openshell-force`), and crypto-shredding of the provider's data key.

import EventLog
import GRPCCore
import OpenShellAPI
import Projections

extension OpenShellService {
  /// gRPC metadata that lets DeleteProvider remove a provider still used by sandboxes.
  public static let forceDeleteHeader = "x-openshell-force"
  /// Response metadata of a forced DeleteProvider: the inference routes it deleted, comma-separated.
  public static let removedRoutesHeader = "x-openshell-removed-inference-routes"

  enum ProviderCall {
    @TaskLocal static var force = false
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

  /// `DeleteProvider` RPC: records `provider.deleted` and destroys the provider's data key. FAILED_PRECONDITION
  /// while sandboxes use it, unless forced (which detaches it and deletes its inference routes). Callers:
  /// operators and users, not sandboxes.
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
}
