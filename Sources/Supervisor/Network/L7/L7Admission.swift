import Foundation
import NIOHTTP1

/// The decision on one request of an inspected connection and the head that goes upstream
/// (see ``L7ClientHandler``). Denials are reported to the proxy's denial reporter with the method,
/// the canonical path and the rule that was missing.
enum L7Admission {
  /// What happens to an admitted request's body (``BodyCredentials``).
  enum BodyMode: Equatable {
    /// Forwarded as it comes (the sandbox holds no credentials).
    case stream
    /// Forwarded as it comes through a ``MarkerGuard``: a placeholder refuses the request.
    case guarded
    /// Buffered (up to ``BodyCredentials/maxRewriteBytes``) and its placeholders resolved: every
    /// matching endpoint sets `request_body_credential_rewrite`.
    case rewrite
    /// Re-signed with SigV4 (``SigV4Signer``): buffered first when the payload is signed.
    case sign(SigV4Signer)
  }

  /// An admitted request: the head to forward, what to do with its body, and its upgrade.
  struct Admitted {
    var head: HTTPRequestHead
    var body: BodyMode
    var upgrade: WebSocketUpgrade.Kind
    /// The credential keys whose values the head now carries (recorded when it is sent).
    var keys: Set<String>
  }

  /// - Returns: the head to forward (origin-form target, placeholders resolved, proxy headers removed,
  ///   upgrade headers as ``WebSocketUpgrade`` allows) and what to do with its body, or the rejection.
  static func admit(_ head: HTTPRequestHead, target: InspectedTarget, proxy: PolicyProxy) -> Result<Admitted, L7ClientHandler.Rejection> {
    let method = head.method.rawValue
    func reject(_ status: HTTPResponseStatus, _ reason: String) -> Result<Admitted, L7ClientHandler.Rejection> {
      proxy.onDenied(.init(method: method, host: target.host, port: target.port, binary: target.binary, reason: reason))
      return .failure(.init(status: status, message: "openshell: \(method) \(target.host):\(target.port) denied: \(reason)"))
    }
    // The target: origin-form; an absolute-form one must name the admitted host and port.
    var uri = head.uri
    let lower = uri.lowercased()
    if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
      let scheme = lower.hasPrefix("https://") ? 8 : 7
      let rest = uri.dropFirst(scheme)
      let authority = String(rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" })
      let named = ProxyRequestHead.splitAuthority(authority, defaultPort: scheme == 8 ? 443 : 80)
      guard let named, named.host == target.host, named.port == target.port else {
        return reject(.forbidden, "absolute-form request for \(authority.prefix(100)) on a connection admitted for \(target.host):\(target.port)")
      }
      uri = String(rest.dropFirst(authority.count))
      if uri.isEmpty || uri.hasPrefix("?") { uri = "/" + uri }
    }
    // The Host header must name the admitted host and port too: it is forwarded as sent, and a different
    // one would take the request (with resolved credentials) to another virtual host of the same upstream.
    let hosts = head.headers["host"]
    guard hosts.count <= 1 else { return reject(.badRequest, "more than one Host header") }
    if let host = hosts.first {
      // A Host without a port names the same host (clients omit it, rightly or not); one with a port must match.
      let raw = host.trimmingCharacters(in: .whitespaces)
      let named = ProxyRequestHead.splitAuthority(raw, defaultPort: target.port)
      guard let named, named.host.lowercased() == target.host.lowercased(), named.port == target.port else {
        return reject(.forbidden, "Host header \(host.prefix(100)) differs from the admitted \(target.host):\(target.port)")
      }
    }
    // The current generation decides: the host, port and binary, then the endpoints' L7 rules.
    let (_, verdict) = proxy.policy.decide(host: target.host, port: target.port, binary: target.binary)
    var rewriteBody = false
    var signer: SigV4Signer?
    var rewriteWebSocket = false
    switch verdict {
    case .deny(let reason): return reject(.forbidden, reason)
    case .allow(let policyName, _, let inspection):
      if let inspection {
        rewriteBody = inspection.endpoints.allSatisfy(\.requestBodyCredentialRewrite)
        rewriteWebSocket = inspection.endpoints.allSatisfy(\.websocketCredentialRewrite)
        let request: L7Request
        do {
          request = try L7Request.parse(method: method, target: uri, allowEncodedSlash: inspection.endpoints.contains { $0.allowEncodedSlash })
        } catch L7Request.TargetError.invalid(let why) {
          return reject(.badRequest, why)
        } catch {
          return reject(.badRequest, "malformed request target")
        }
        do {
          signer = try SigV4Signer.forRequest(head, endpoints: inspection.endpoints, host: target.host)
        } catch let r as SigV4Signer.Refusal {
          return reject(r.status, r.description)
        } catch {
          return reject(.internalServerError, "\(error)")
        }
        if case .deny(let why) = L7Rules.evaluate(request, endpoints: inspection.endpoints) {
          let reason = "\(why) (network policy \(policyName), L7)"
          if !inspection.auditOnly { return reject(.forbidden, reason) }
          proxy.onDenied(.init(method: method, host: target.host, port: target.port, binary: target.binary, reason: "audit only, forwarded: \(reason)"))
        }
      }
    }
    // Credentials: placeholders become the current values, only here (allowed, inspected).
    let values = ProviderEnvironmentAgent.values
    var headers = HTTPHeaders()
    var keys = Set<String>()
    do {
      uri = try CredentialPlaceholders.resolveTarget(uri, values, used: &keys)
      for (name, value) in head.headers {
        let lowerName = name.lowercased()
        if lowerName == "proxy-connection" || lowerName == "proxy-authorization" { continue }
        headers.add(name: name, value: try CredentialPlaceholders.resolveHeader(name: name, value: value, values, used: &keys))
      }
    } catch {
      return reject(.internalServerError, "\(error)")
    }
    if !headers.contains(name: "host") {
      headers.add(name: "host", value: target.port == (target.tls ? 443 : 80) ? target.host : "\(target.host):\(target.port)")
    }
    let mode: BodyMode = signer.map { .sign($0) } ?? (values.isEmpty ? .stream : rewriteBody ? .rewrite : .guarded)
    var forwarded = HTTPRequestHead(version: head.version, method: head.method, uri: uri, headers: headers)
    switch WebSocketUpgrade.admit(&forwarded, rewrite: rewriteWebSocket) {
    case .failure(let r): return reject(r.status, r.message)
    case .success(let kind): return .success(Admitted(head: forwarded, body: mode, upgrade: kind, keys: keys))
    }
  }
}
