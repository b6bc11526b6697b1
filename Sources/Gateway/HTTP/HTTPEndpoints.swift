import Foundation

/// What `GET /readyz` reports. Supplied by the gateway through a `@Sendable () -> ReadinessInfo` closure
/// that is called once per request.
public struct ReadinessInfo: Sendable, Hashable {
  /// Whether the gateway has finished start-up (log opened, projections caught up) and serves RPCs.
  public var isReady: Bool
  /// The gateway version string, e.g. `0.1.0`.
  public var version: String
  /// Sequence number of the newest durable event.
  public var headSeq: UInt64

  /// A report with every field given.
  public init(isReady: Bool, version: String, headSeq: UInt64) {
    self.isReady = isReady
    self.version = version
    self.headSeq = headSeq
  }

  /// Ready, at `headSeq`.
  public static func ready(version: String, headSeq: UInt64) -> ReadinessInfo {
    ReadinessInfo(isReady: true, version: version, headSeq: headSeq)
  }

  /// Still starting.
  public static func starting(version: String) -> ReadinessInfo {
    ReadinessInfo(isReady: false, version: version, headSeq: 0)
  }
}

/// The HTTP/1.1 routes on the gateway port (OpenShell serves `/health`, `/healthz` and `/readyz` on its
/// one port, openshell-behavior.md §3; `/metrics` is ours):
///
/// | request | response |
/// |---|---|
/// | `GET /healthz`, `GET /health` | 200 `text/plain` `ok` (liveness) |
/// | `GET /readyz` | 200 `{"status":"ready","version":"…","head_seq":N}`, or 503 `{"status":"starting","version":"…"}` |
/// | `GET /metrics` | 200 Prometheus text format 0.0.4; 403 on a plaintext connection to a TLS port |
/// | `GET /auth/config` | 200 JSON describing how to authenticate (``GatewayAuthDescription``); public |
/// | other method on a known path | 405 with `Allow: GET, HEAD` |
/// | anything else | 404 |
///
/// `HEAD` is answered like `GET` without a body (RFC 9110 §9.3.2).
struct HTTPEndpoints: Sendable {
  /// A response before HTTP/1.1 framing.
  struct Response: Sendable, Equatable {
    var status: Int
    var contentType: String
    var body: String
    var extraHeaders: [(String, String)] = []
    /// Bounded label for metrics: the route, or `other`.
    var route: String

    static func == (a: Response, b: Response) -> Bool {
      a.status == b.status && a.contentType == b.contentType && a.body == b.body && a.route == b.route
        && a.extraHeaders.map { "\($0.0): \($0.1)" } == b.extraHeaders.map { "\($0.0): \($0.1)" }
    }
  }

  static let routes: Set<String> = ["/healthz", "/health", "/readyz", "/metrics", GatewayAuthDescription.path]

  let readiness: @Sendable () -> ReadinessInfo
  let metrics: GatewayMetrics?
  /// The body of `GET /auth/config`.
  var authDescription = GatewayAuthDescription(security: .mutualTLS, oidc: nil)
  /// Exposed services under ``ServiceURL/prefix`` (nil: none, those paths answer 404).
  var services: ServiceRouter? = nil
  /// Whether the port speaks TLS (for `X-Forwarded-Proto`).
  var secure = true

  /// Routes one request. `restricted` marks plaintext HTTP on a TLS port: only the probes are served.
  func respond(method: String, uri: String, restricted: Bool) -> Response {
    let path = String(uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
    guard Self.routes.contains(path) else {
      return Response(status: 404, contentType: "text/plain; charset=utf-8", body: "not found\n", route: "other")
    }
    guard method == "GET" || method == "HEAD" else {
      return Response(
        status: 405, contentType: "text/plain; charset=utf-8", body: "method not allowed\n",
        extraHeaders: [("Allow", "GET, HEAD")], route: path)
    }
    switch path {
    case "/healthz", "/health":
      return Response(status: 200, contentType: "text/plain; charset=utf-8", body: "ok", route: path)
    case "/readyz":
      let info = readiness()
      let body: String
      if info.isReady {
        body = #"{"status":"ready","version":\#(Self.jsonString(info.version)),"head_seq":\#(info.headSeq)}"#
      } else {
        body = #"{"status":"starting","version":\#(Self.jsonString(info.version))}"#
      }
      return Response(
        status: info.isReady ? 200 : 503, contentType: "application/json", body: body, route: path)
    case GatewayAuthDescription.path:
      return Response(status: 200, contentType: "application/json", body: authDescription.json, route: path)
    default:  // /metrics
      guard !restricted else {
        return Response(
          status: 403, contentType: "text/plain; charset=utf-8", body: "metrics require TLS\n", route: path)
      }
      return Response(
        status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8",
        body: metrics?.exposition() ?? "", route: path)
    }
  }

  /// A JSON string literal (RFC 8259 §7 escaping).
  static func jsonString(_ value: String) -> String {
    var out = "\""
    for scalar in value.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
      default: out.unicodeScalars.append(scalar)
      }
    }
    return out + "\""
  }
}
