import Foundation
import OpenShellAPI

/// Who opened a proxy connection, as resolved from the kernel (``CallerResolver``).
struct CallerBinary: Sendable, Equatable {
  /// `/proc/<pid>/exe` of the process owning the socket (path inside the sandbox).
  var path: String
  /// SHA-256 (hex) of that executable.
  var sha256: String
  /// Executables of its ancestors up to (excluding) the supervisor, nearest first.
  var ancestors: [String]
  /// Absolute paths named on its command line (diagnostics only: they never authorise, since the
  /// workload chooses them freely).
  var cmdlinePaths: [String]
  var pid: Int32
}

/// The outcome of one decision.
enum NetworkVerdict: Sendable, Equatable {
  /// Allowed by `network_policies[policy]`; `allowedIPs` are the matching endpoints' `allowed_ips`
  /// (CIDRs) that may let internal addresses through the SSRF guard. `inspection` is non-nil when the
  /// connection must be inspected at L7 (every matching endpoint is `protocol: rest` without
  /// `tls: skip`): its requests are then decided one by one by ``L7Rules``.
  case allow(policy: String, allowedIPs: [String], inspection: L7Inspection?)
  case deny(reason: String)
}

/// The L7 scope of an inspected connection: the matching `protocol: rest` endpoints of every policy
/// that allows the host, port and binary (a request is allowed when one of them allows it and none
/// denies it, as upstream's `allow_request`).
struct L7Inspection: Sendable, Equatable {
  var endpoints: [Openshell_Sandbox_V1_NetworkEndpoint]
  /// `enforcement: audit` on every endpoint: L7 denials are recorded but the request goes through.
  var auditOnly: Bool { endpoints.allSatisfy { $0.enforcement == .audit } }
}

/// The L4 decision of OpenShell's policy engine (enforcement-and-ssh.md §1.4, row "Decision engine";
/// openshell-behavior.md §7): a request to `host:port` from `binary` is allowed when some
/// `network_policies` entry has an endpoint matching the host (exact, case-insensitive; `*.` = exactly
/// one DNS label; `**.` = one or more labels; an endpoint without host but with `allowed_ips` matches an
/// IP-literal host inside them) and the port (`port`/`ports`), and a binary (`binaries[].path`, `*`
/// within one path segment, `**` across segments) matching the executable or one of its ancestors.
/// Policies are tried by name in lexicographic order; the first match is recorded. A nil policy (none
/// ever loaded) denies everything. Deny reasons name the missing rule.
///
/// L7: when every allowing endpoint is `protocol: rest` (and not `tls: skip`), the verdict carries an
/// ``L7Inspection``; when any allowing endpoint is plain L4 (no protocol, `sql`, or `tls: skip`), the
/// connection is tunnelled uninspected, as that endpoint allows all of it anyway.
enum NetworkDecision {
  static func decide(
    _ policy: Openshell_Sandbox_V1_SandboxPolicy?, host rawHost: String, port: Int, binary: CallerBinary?
  ) -> NetworkVerdict {
    guard let policy else { return .deny(reason: "no valid network policy has been loaded (fail closed)") }
    let host = rawHost.lowercased()
    var hostPortMatched: [String] = []
    var allowing: [(name: String, endpoints: [Openshell_Sandbox_V1_NetworkEndpoint])] = []
    for name in policy.networkPolicies.keys.sorted() {
      let rule = policy.networkPolicies[name]!
      let matching = rule.endpoints.filter { endpointMatches($0, host: host, port: port) }
      guard !matching.isEmpty else { continue }
      hostPortMatched.append(name)
      guard let binary else { continue }
      let candidates = [binary.path] + binary.ancestors
      if rule.binaries.contains(where: { b in candidates.contains { pathMatches(b.path, $0) } }) {
        allowing.append((name, matching))
      }
    }
    if let first = allowing.first {
      if let l4 = allowing.first(where: { $0.endpoints.contains { !inspected($0) } }) {
        let e = l4.endpoints.first { !inspected($0) }!
        return .allow(policy: l4.name, allowedIPs: e.allowedIps, inspection: nil)
      }
      let endpoints = allowing.flatMap(\.endpoints)
      return .allow(policy: first.name, allowedIPs: endpoints.flatMap(\.allowedIps), inspection: L7Inspection(endpoints: endpoints))
    }
    if hostPortMatched.isEmpty {
      return .deny(reason: "no network policy has an endpoint for \(host):\(port)")
    }
    guard let binary else {
      return .deny(
        reason:
          "the calling process could not be identified (policies \(hostPortMatched.joined(separator: ", ")) allow \(host):\(port) only to listed binaries)")
    }
    return .deny(reason: "binary \(binary.path) is not listed in the binaries of network policy \(hostPortMatched.joined(separator: ", ")) for \(host):\(port)")
  }

  /// Whether connections through `e` are inspected at L7: `protocol: rest` without `tls: skip`
  /// (openshell-behavior.md §7: "TLS is detected automatically and terminated for rest"). `sql` has no
  /// inspection (the validator only admits it with `enforcement: audit`), so it is L4.
  static func inspected(_ e: Openshell_Sandbox_V1_NetworkEndpoint) -> Bool {
    e.protocol == "rest" && e.tls != .skip
  }

  static func endpointMatches(_ e: Openshell_Sandbox_V1_NetworkEndpoint, host: String, port: Int) -> Bool {
    let ports = e.ports.isEmpty ? (e.port == 0 ? [] : [e.port]) : e.ports
    guard ports.contains(where: { Int($0) == port }) else { return false }
    if e.host.isEmpty {
      guard !e.allowedIps.isEmpty, let ip = IPAddress(host) else { return false }
      return e.allowedIps.contains { CIDR($0)?.contains(ip) ?? false }
    }
    return hostMatches(e.host.lowercased(), host)
  }

  /// Host glob by DNS label: `*.example.com` matches `a.example.com` only; `**.example.com` matches
  /// `a.example.com` and `a.b.example.com` (never `example.com` itself).
  static func hostMatches(_ pattern: String, _ host: String) -> Bool {
    let p = pattern.hasSuffix(".") ? String(pattern.dropLast()) : pattern
    let h = host.hasSuffix(".") ? String(host.dropLast()) : host
    if p.hasPrefix("**.") {
      let suffix = String(p.dropFirst(2))  // ".example.com"
      return h.hasSuffix(suffix) && h.count > suffix.count
    }
    if p.hasPrefix("*.") {
      let suffix = String(p.dropFirst(1))
      guard h.hasSuffix(suffix) else { return false }
      let label = h.dropLast(suffix.count)
      return !label.isEmpty && !label.contains(".")
    }
    return p == h
  }

  /// Path glob: `*` matches within one segment (no `/`), `**` matches any run of characters including `/`.
  static func pathMatches(_ pattern: String, _ path: String) -> Bool {
    guard pattern.contains("*") else { return pattern == path }
    let p = Array(pattern.utf8)
    let s = Array(path.utf8)
    var memo = [Int: Bool]()
    func match(_ i: Int, _ j: Int) -> Bool {
      let key = i * (s.count + 1) + j
      if let m = memo[key] { return m }
      let r: Bool
      if i == p.count {
        r = j == s.count
      } else if p[i] == UInt8(ascii: "*") {
        let double = i + 1 < p.count && p[i + 1] == UInt8(ascii: "*")
        let next = double ? i + 2 : i + 1
        var k = j
        var found = match(next, k)
        while !found, k < s.count, double || s[k] != UInt8(ascii: "/") {
          k += 1
          found = match(next, k)
        }
        r = found
      } else {
        r = j < s.count && p[i] == s[j] && match(i + 1, j + 1)
      }
      memo[key] = r
      return r
    }
    return match(0, 0)
  }
}
