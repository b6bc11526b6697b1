import Foundation
import NIOCore
import NIOHTTP1
import OpenShellAPI

/// `https://inference.local` (openshell-behavior.md §1F, §6; enforcement-and-ssh.md §1.4 "Special
/// hosts"): the proxy terminates TLS for it (no network policy involved) and forwards OpenAI- and
/// Anthropic-shaped requests to the gateway's `inference.local` route (the bundle the supervisor
/// watches, ``ConfigAgent``), with the caller's credentials and model replaced by the route's. The
/// provider key never enters the sandbox.
///
/// Accepted: `POST /v1/chat/completions`, `/v1/completions`, `/v1/responses` (OpenAI protocols),
/// `POST /v1/messages` (Anthropic), `GET /v1/models`, `GET /v1/models/*` (model discovery), each only
/// when the route's provider serves that protocol; everything else is denied (`403`). Bodies are read
/// whole (at most ``maxBody``), must be JSON objects, and get `"model"` set to the route's model.
/// Auth by provider type: `x-api-key` plus `anthropic-version: 2023-06-01` (when absent) for
/// anthropic, `Authorization: Bearer` otherwise.
enum InferenceRouter {
  static let host = "inference.local"
  /// Upstream's cap on a buffered inference request (10 MiB).
  static let maxBody = 10 << 20
  /// The user-facing route name in the bundle.
  static let routeName = "inference.local"

  /// The current `inference.local` route, if the gateway has one configured.
  static var currentRoute: Openshell_Inference_V1_ResolvedRoute? {
    ConfigAgent.current.withLock { $0 }?.state.withLock { $0.routes }.first { $0.name == routeName }
  }

  /// Where the route's requests go: scheme, host, port and the base path (e.g. `/v1`).
  struct Endpoint: Sendable, Equatable {
    var tls: Bool
    var host: String
    var port: Int
    var basePath: String
  }

  /// Parses the route's `base_url` (`http(s)://host[:port][/path]`).
  /// - Throws: ``TLSSetupError`` when it is not an absolute http(s) URL.
  static func endpoint(_ route: Openshell_Inference_V1_ResolvedRoute) throws -> Endpoint {
    guard let u = URLComponents(string: route.baseURL.trimmingCharacters(in: .whitespaces)), let scheme = u.scheme?.lowercased(),
      scheme == "http" || scheme == "https", let host = u.host, !host.isEmpty
    else { throw TLSSetupError(message: "inference route base_url is not an http(s) URL") }
    var path = u.percentEncodedPath
    while path.hasSuffix("/") { path.removeLast() }
    return Endpoint(tls: scheme == "https", host: host.lowercased(), port: u.port ?? (scheme == "https" ? 443 : 80), basePath: path)
  }

  /// The protocol a request needs, nil when it is not an inference request.
  static func requiredProtocol(method: String, path: String) -> String? {
    switch (method, path) {
    case ("POST", "/v1/chat/completions"): return "openai_chat_completions"
    case ("POST", "/v1/completions"): return "openai_completions"
    case ("POST", "/v1/responses"): return "openai_responses"
    case ("POST", "/v1/messages"): return "anthropic_messages"
    case ("GET", "/v1/models"): return "model_discovery"
    case ("GET", _) where path.hasPrefix("/v1/models/") && path.count > "/v1/models/".count: return "model_discovery"
    default: return nil
    }
  }

  /// The head to forward (or the rejection) and whether the body must be rewritten (a POST).
  static func admit(_ head: HTTPRequestHead, route: Openshell_Inference_V1_ResolvedRoute, endpoint: Endpoint) -> Result<
    (HTTPRequestHead, rewriteBody: Bool), L7ClientHandler.Rejection
  > {
    let method = head.method.rawValue
    let request: L7Request
    do { request = try L7Request.parse(method: method, target: head.uri) } catch {
      return .failure(.init(status: .badRequest, message: "openshell: inference.local: malformed request target"))
    }
    guard let needed = requiredProtocol(method: request.method, path: request.path) else {
      return .failure(
        .init(
          status: .forbidden,
          message:
            "openshell: inference.local: \(method) \(request.path) is not an inference request (accepted: POST /v1/chat/completions, /v1/completions, /v1/responses, /v1/messages; GET /v1/models[/id])"
        ))
    }
    guard route.protocols.contains(needed) else {
      return .failure(.init(status: .forbidden, message: "openshell: inference.local: the configured \(route.providerType) route does not serve \(needed)"))
    }
    var headers = HTTPHeaders()
    let dropped: Set<String> = [
      "authorization", "x-api-key", "api-key", "proxy-authorization", "proxy-connection", "host", "content-length", "transfer-encoding",
    ]
    for (name, value) in head.headers where !dropped.contains(name.lowercased()) { headers.add(name: name, value: value) }
    headers.add(name: "host", value: endpoint.port == (endpoint.tls ? 443 : 80) ? endpoint.host : "\(endpoint.host):\(endpoint.port)")
    if route.providerType == "anthropic" {
      headers.add(name: "x-api-key", value: route.apiKey)
      if !headers.contains(name: "anthropic-version") { headers.add(name: "anthropic-version", value: "2023-06-01") }
    } else {
      headers.add(name: "authorization", value: "Bearer \(route.apiKey)")
    }
    let query = head.uri.firstIndex(of: "?").map { String(head.uri[$0...]) } ?? ""
    let uri = endpoint.basePath + String(request.path.dropFirst(3)) + query  // "/v1/x" → base + "/x"
    return .success((HTTPRequestHead(version: head.version, method: head.method, uri: uri, headers: headers), request.method == "POST"))
  }

  /// The request body with `"model"` set to the route's model.
  /// - Throws: ``L7ClientHandler/Rejection`` (400) when the body is not a JSON object.
  static func rewriteBody(_ body: ByteBuffer, model: String) throws -> ByteBuffer {
    guard let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)), var dict = object as? [String: Any] else {
      throw L7ClientHandler.Rejection(status: .badRequest, message: "openshell: inference.local: the request body is not a JSON object")
    }
    dict["model"] = model
    let data = try JSONSerialization.data(withJSONObject: dict)
    return ByteBuffer(bytes: data)
  }
}
