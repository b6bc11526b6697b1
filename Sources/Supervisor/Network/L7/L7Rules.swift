import Foundation
import OpenShellAPI

/// One HTTP request as the L7 rules see it: the method and the canonical path and query of its target.
struct L7Request: Sendable, Equatable {
  var method: String
  /// Canonical path: percent-decoded, dot segments resolved, doubled slashes collapsed, `;params`
  /// stripped (OpenShell canonicalizes before matching, so `/a/../b` cannot dodge a rule for `/b`).
  var path: String
  /// Query parameters, percent-decoded, each name with all its values in order.
  var query: [String: [String]]

  enum TargetError: Error, Equatable { case invalid(String) }

  /// Parses an origin-form target (`/path?query`). An encoded slash (`%2F`) is refused unless the
  /// endpoint opts in (`allow_encoded_slash`), as is any target that is not origin-form.
  /// - Throws: ``TargetError`` naming what is wrong.
  static func parse(method: String, target: String, allowEncodedSlash: Bool = false) throws -> L7Request {
    guard target.hasPrefix("/") else { throw TargetError.invalid("request target is not a path: \(target.prefix(80))") }
    let noFragment = target.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
    let parts = noFragment.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
    let rawPath = String(parts[0])
    if !allowEncodedSlash, rawPath.range(of: "%2f", options: .caseInsensitive) != nil {
      throw TargetError.invalid("encoded slash (%2F) in the request path")
    }
    var segments: [String] = []
    for raw in rawPath.split(separator: "/", omittingEmptySubsequences: true) {
      let noParams = raw.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
      guard let seg = noParams.removingPercentEncoding else { throw TargetError.invalid("malformed percent-encoding in the request path") }
      if seg.isEmpty || seg == "." { continue }
      if seg == ".." {
        _ = segments.popLast()
        continue
      }
      segments.append(seg)
    }
    var path = "/" + segments.joined(separator: "/")
    if rawPath.hasSuffix("/"), !segments.isEmpty { path += "/" }
    var query: [String: [String]] = [:]
    if parts.count == 2 {
      for pair in parts[1].split(separator: "&", omittingEmptySubsequences: true) {
        let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        let decode = { (s: Substring) in String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s) }
        query[decode(kv[0]), default: []].append(kv.count == 2 ? decode(kv[1]) : "")
      }
    }
    return L7Request(method: method.uppercased(), path: path, query: query)
  }
}

/// The L7 rules of `protocol: rest` endpoints (openshell-behavior.md §7; upstream
/// `data/sandbox-policy.rego` "L7 request evaluation" and `l7/mod.rs` access presets):
///
/// - `access` expands to rules: `read-only` = GET, HEAD, OPTIONS on `**`; `read-write` adds POST, PUT,
///   PATCH; `full` = any method on any path.
/// - An allow rule matches when its method matches (`*` = any; case-insensitive; a `GET` rule also
///   admits `HEAD`), its path glob matches the canonical path (`**` = anything; otherwise `*` stays
///   within one segment and `**` crosses segments), and every query key it names is present with all
///   values matching (a string glob, or `any` of a list).
/// - A deny rule matches with the same method/path test and, for its query keys, every key present
///   with at least one matching value. A deny match on any endpoint wins over every allow.
/// - A request is allowed when some endpoint allows it and none denies it.
enum L7Rules {
  enum Verdict: Sendable, Equatable {
    case allow
    /// The reason, in OpenShell's words (`POST /x not permitted by policy`, `… blocked by deny rule`).
    case deny(String)
  }

  static func evaluate(_ request: L7Request, endpoints: [Openshell_Sandbox_V1_NetworkEndpoint]) -> Verdict {
    let what = "\(request.method) \(request.path)"
    if endpoints.contains(where: { $0.denyRules.contains { denyMatches($0, request) } }) {
      return .deny("\(what) blocked by deny rule")
    }
    if endpoints.contains(where: { allowRules($0).contains { allowMatches($0, request) } }) { return .allow }
    return .deny("\(what) not permitted by policy")
  }

  /// The endpoint's allow rules, with `access` expanded.
  static func allowRules(_ e: Openshell_Sandbox_V1_NetworkEndpoint) -> [Openshell_Sandbox_V1_L7Allow] {
    if !e.rules.isEmpty { return e.rules.filter(\.hasAllow).map(\.allow) }
    let methods: [String]
    switch e.access {
    case .readOnly: methods = ["GET", "HEAD", "OPTIONS"]
    case .readWrite: methods = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"]
    case .full: methods = ["*"]
    default: methods = []
    }
    return methods.map { m in
      .with {
        $0.method = m; $0.path = "**"
      }
    }
  }

  static func allowMatches(_ rule: Openshell_Sandbox_V1_L7Allow, _ r: L7Request) -> Bool {
    guard !rule.method.isEmpty, methodMatches(r.method, rule.method), pathMatches(r.path, rule.path) else { return false }
    for (key, matcher) in rule.query {
      guard let values = r.query[key], !values.isEmpty, values.allSatisfy({ valueMatches($0, matcher) }) else { return false }
    }
    return true
  }

  static func denyMatches(_ rule: Openshell_Sandbox_V1_L7DenyRule, _ r: L7Request) -> Bool {
    guard !rule.method.isEmpty, methodMatches(r.method, rule.method), pathMatches(r.path, rule.path) else { return false }
    for (key, matcher) in rule.query {
      guard let values = r.query[key], values.contains(where: { valueMatches($0, matcher) }) else { return false }
    }
    return true
  }

  static func methodMatches(_ actual: String, _ expected: String) -> Bool {
    let a = actual.uppercased()
    let e = expected.uppercased()
    return e == "*" || a == e || (a == "HEAD" && e == "GET")
  }

  static func pathMatches(_ path: String, _ pattern: String) -> Bool {
    pattern == "**" || NetworkDecision.pathMatches(pattern, path)
  }

  /// A query value glob: no delimiter, so `*` matches any run of characters.
  static func valueMatches(_ value: String, _ m: Openshell_Sandbox_V1_L7QueryMatcher) -> Bool {
    func glob(_ p: String) -> Bool { NetworkDecision.pathMatches(p.replacingOccurrences(of: "**", with: "*").replacingOccurrences(of: "*", with: "**"), value) }
    if !m.glob.isEmpty { return glob(m.glob) }
    return m.any.contains(where: glob)
  }
}
