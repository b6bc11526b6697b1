// Route RPCs: SetInferenceRoute (with verification of the endpoint unless --no-verify), GetInferenceRoute,
// DeleteInferenceRoute.

import Foundation
import GRPCCore
import OpenShellAPI
import Projections

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

extension InferenceService {
  /// `SetInferenceRoute` RPC: checks the provider (default workspace) and, unless `no_verify`, probes its
  /// `/models` endpoint with the key; then records `inference.route_set` and the new bundle revision. Callers:
  /// operators and users, not sandboxes. FAILED_PRECONDITION for a missing provider or a failed probe.
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

  /// `GetInferenceRoute` RPC: the stored route (`inference.local` or `sandbox-system`); NOT_FOUND when it is
  /// not configured. Callers: operators and users, not sandboxes.
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

  /// `DeleteInferenceRoute` RPC: records `inference.route_deleted` and the new bundle revision; a no-op when
  /// the route is absent. Callers: operators and users, not sandboxes.
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
