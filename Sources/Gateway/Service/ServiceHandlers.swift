import Foundation
import GRPCCore
import OpenShellAPI
import Projections

/// Where an exposed service is reached: a path on the gateway's one port (TLS and client certificate
/// as for the API), `<scheme>://<host>:<port>/_svc/<workspace>/<sandbox>/<service>/`, the unnamed
/// service being `_` (names are RFC 1123 labels, which cannot contain `_`, so this is unambiguous).
///
/// Why path-based and not OpenShell's host-based `http://<sandbox>[--<service>].openshell.localhost`
/// (openshell-behavior.md §8.5): a path works with the gateway's existing server certificate (no
/// wildcard SAN), without `*.localhost` name resolution (glibc on Debian does not resolve it; curl
/// does, Python's urllib and the SDK's users would not) and from every HTTP client. The cost: the
/// application sees its paths without the prefix (the gateway strips it and sends
/// `X-Forwarded-Prefix`), so an application that writes absolute links must honour that header.
public enum ServiceURL {
  /// The path prefix of every service URL.
  public static let prefix = "/_svc/"
  /// Path segment of the unnamed service.
  public static let unnamed = "_"

  /// The URL prefix of a service (ends with `/`).
  public static func url(base: String, workspace: String, sandbox: String, service: String) -> String {
    base + path(workspace: workspace, sandbox: sandbox, service: service)
  }

  /// `/_svc/<workspace>/<sandbox>/<service or _>/`.
  public static func path(workspace: String, sandbox: String, service: String) -> String {
    "\(prefix)\(workspace)/\(sandbox)/\(service.isEmpty ? unnamed : service)/"
  }

  /// Splits a request target under ``prefix`` into workspace, sandbox, service and the rest (the
  /// upstream request target, starting with `/`; nil when the URL stops after the service segment).
  /// - Returns: nil when `target` is not a service URL.
  public static func parse(_ target: String) -> (workspace: String, sandbox: String, service: String, rest: String?)? {
    guard target.hasPrefix(prefix) else { return nil }
    let tail = target.dropFirst(prefix.count)
    let parts = tail.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
    guard parts.count >= 3 else { return nil }
    var service = String(parts[2])
    // The service segment may carry the query when the path stops there: "/_svc/w/s/_?x=1".
    var rest: String?
    if parts.count == 4 {
      rest = "/" + parts[3]
    } else if let q = service.firstIndex(of: "?") {
      rest = nil
      service = String(service[..<q])
    }
    let name = service == unnamed ? "" : service
    return (String(parts[0]), String(parts[1]), name, rest)
  }
}

extension OpenShellService {
  /// The base (`scheme://host:port`) of service URLs, once the server listens.
  var serviceBase: String {
    guard let e = ssh.currentEndpoint else { return "" }
    return "\(e.scheme)://\(e.host.contains(":") ? "[\(e.host)]" : e.host):\(e.port)"
  }

  /// `service_urls` of a sandbox: service name → URL.
  func serviceURLs(_ s: SandboxRecord) -> [String: String] {
    var urls: [String: String] = [:]
    for e in s.serviceExposures { urls[e.service] = ServiceURL.url(base: serviceBase, workspace: s.workspace, sandbox: s.name, service: e.service) }
    return urls
  }

  func serviceResponse(_ s: SandboxRecord, _ e: ServiceExposureRecord) -> Openshell_V1_ServiceEndpointResponse {
    .with {
      $0.endpoint = .with {
        $0.metadata = .with { m in
          m.id = "\(s.id)/\(e.service)"; m.name = e.service; m.workspace = s.workspace
        }
        $0.sandboxID = s.id
        $0.sandbox = s.name
        $0.name = e.service
        $0.targetPort = e.targetPort
        $0.authorizationMode = e.authorizationMode == 2 ? .bearerPassthrough : .strip
      }
      $0.url = ServiceURL.url(base: serviceBase, workspace: s.workspace, sandbox: s.name, service: e.service)
    }
  }

  /// Checks of one exposure (ExposeService and CreateSandbox's `service_exposures`).
  static func validateExposure(service: String, port: UInt32, mode: Openshell_V1_ServiceAuthorizationMode, field: String) throws {
    if !service.isEmpty, let v = NameRule.violation(service) { throw RPCErrors.invalidArgument(field: "\(field).service", v) }
    if port == 0 || port > 65535 { throw RPCErrors.invalidArgument(field: "\(field).target_port", "must be 1-65535") }
    if case .UNRECOGNIZED(let n) = mode { throw RPCErrors.invalidArgument(field: "\(field).authorization_mode", "unknown value \(n)") }
  }

  func serviceSandbox(_ name: String, _ scope: Openshell_Datamodel_V1_WorkspaceSelector, _ state: GatewayState) throws -> SandboxRecord {
    guard !name.isEmpty else { throw RPCErrors.invalidArgument(field: "sandbox", "is required") }
    let ws = try workspace(scope, state)
    guard let s = state.sandbox(named: name, workspace: ws) else { throw RPCErrors.notFound("sandbox \(ws)/\(name)") }
    return s
  }

  /// ExposeService: makes the sandbox's loopback HTTP service on `target_port` reachable at a
  /// ``ServiceURL`` (`name` empty = the unnamed service; an exposure of the same name is replaced).
  /// `authorization_mode` STRIP (default) removes the caller's `Authorization` header before the
  /// request reaches the service, BEARER_PASSTHROUGH forwards it (the service authenticates it).
  /// `domain` (host-based URLs) is not offered: INVALID_ARGUMENT. Appends `service.exposed`.
  public func exposeService(request: Openshell_V1_ExposeServiceRequest, context: ServerContext) async throws -> Openshell_V1_ServiceEndpointResponse {
    let caller = try userCaller("ExposeService")
    try Self.validateExposure(service: request.name, port: request.targetPort, mode: request.authorizationMode, field: "request")
    if request.domain {
      throw RPCErrors.invalidArgument(
        field: "domain", "host-based service URLs are not offered by this gateway; services are reached by path (\(ServiceURL.prefix)…)")
    }
    let state = await store.state
    let sandbox = try serviceSandbox(request.sandbox, request.workspaceScope, state)
    let mode: Int32 = request.authorizationMode == .bearerPassthrough ? 2 : 1
    let result = try await store.execute(actor: caller.actor, requestID: request.requestID) { state in
      guard let s = state.sandboxes[sandbox.id], s.deletionRequestedNs == nil else {
        throw RPCErrors.failedPrecondition("sandbox \(sandbox.workspace)/\(sandbox.name) is being deleted")
      }
      return Decision(events: [
        GatewayEvent(
          .serviceExposed(
            .with {
              $0.sandboxID = sandbox.id; $0.service = request.name; $0.targetPort = request.targetPort; $0.authorizationMode = mode
            }))
      ])
    }
    guard let s = result.state.sandboxes[sandbox.id], let e = s.serviceExposures.first(where: { $0.service == request.name }) else {
      throw RPCErrors.notFound("sandbox \(sandbox.workspace)/\(sandbox.name)")
    }
    hub?.logs.gateway(sandbox.id, "service \(request.name.isEmpty ? "(unnamed)" : request.name) exposed on port \(request.targetPort) by \(caller.actor)")
    return serviceResponse(s, e)
  }

  /// GetService: one exposure of a sandbox (NOT_FOUND when the sandbox or the service does not exist).
  public func getService(request: Openshell_V1_GetServiceRequest, context: ServerContext) async throws -> Openshell_V1_ServiceEndpointResponse {
    _ = try userCaller("GetService")
    let s = try serviceSandbox(request.sandbox, request.workspaceScope, await store.state)
    guard let e = s.serviceExposures.first(where: { $0.service == request.name }) else {
      throw RPCErrors.notFound("service \(request.name.isEmpty ? "(unnamed)" : request.name) of sandbox \(s.workspace)/\(s.name)")
    }
    return serviceResponse(s, e)
  }

  /// ListServices: the exposures of `sandbox`, or of every sandbox in the workspace scope when it is
  /// empty, ordered by workspace, sandbox and service name; `page_size` (default 100, at most 1000)
  /// and `page_token` (an offset from the previous page).
  public func listServices(request: Openshell_V1_ListServicesRequest, context: ServerContext) async throws -> Openshell_V1_ListServicesResponse {
    _ = try userCaller("ListServices")
    let state = await store.state
    var sandboxes: [SandboxRecord]
    if request.sandbox.isEmpty {
      let scope = try listScope(request.workspaceScope, state)
      sandboxes = state.sandboxes.values.filter { scope == nil || $0.workspace == scope }
    } else {
      sandboxes = [try serviceSandbox(request.sandbox, request.workspaceScope, state)]
    }
    sandboxes.sort { ($0.workspace, $0.name) < ($1.workspace, $1.name) }
    let all = sandboxes.flatMap { s in s.serviceExposures.map { serviceResponse(s, $0) } }
    guard request.pageSize >= 0 else { throw RPCErrors.invalidArgument(field: "page_size", "must not be negative") }
    let size = request.pageSize == 0 ? 100 : min(Int(request.pageSize), 1000)
    guard let offset = request.pageToken.isEmpty ? 0 : Int(request.pageToken), offset >= 0 else {
      throw RPCErrors.invalidArgument(field: "page_token", "not a token from a previous page")
    }
    let page = Array(all.dropFirst(offset).prefix(size))
    return .with {
      $0.services = page
      if offset + page.count < all.count { $0.nextPageToken = String(offset + page.count) }
    }
  }

  /// DeleteService: removes an exposure (its URL answers 404 from then on). Unknown: NOT_FOUND, or
  /// ALREADY_ABSENT with `allow_missing`. Appends `service.deleted`.
  public func deleteService(request: Openshell_V1_DeleteServiceRequest, context: ServerContext) async throws -> Openshell_V1_DeleteServiceResponse {
    let caller = try userCaller("DeleteService")
    let state = await store.state
    let sandbox: SandboxRecord
    do {
      sandbox = try serviceSandbox(request.sandbox, request.workspaceScope, state)
    } catch let e as RPCError where e.code == .notFound && request.allowMissing {
      return .with { $0.outcome = .alreadyAbsent }
    }
    let result = try await store.execute(actor: caller.actor, requestID: request.requestID) { state in
      guard let s = state.sandboxes[sandbox.id], s.serviceExposures.contains(where: { $0.service == request.name }) else {
        if request.allowMissing { return Decision(events: []) }
        throw RPCErrors.notFound("service \(request.name.isEmpty ? "(unnamed)" : request.name) of sandbox \(sandbox.workspace)/\(sandbox.name)")
      }
      return Decision(events: [
        GatewayEvent(
          .serviceDeleted(
            .with {
              $0.sandboxID = sandbox.id; $0.service = request.name
            }))
      ])
    }
    return .with { $0.outcome = result.decision.events.isEmpty ? .alreadyAbsent : .completed }
  }
}
