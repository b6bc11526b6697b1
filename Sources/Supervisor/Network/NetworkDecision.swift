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
  /// Allowed by `network_policies[policy]`; `allowedIPs` are that endpoint's `allowed_ips` (CIDRs)
  /// that may let internal addresses through the SSRF guard.
  case allow(policy: String, allowedIPs: [String])
  case deny(reason: String)
}

/// The L4 decision of OpenShell's policy engine (enforcement-and-ssh.md §1.4, row "Decision engine";
/// openshell-behavior.md §7): a request to `host:port` from `binary` is allowed when some
/// `network_policies` entry has an endpoint matching the host (exact, case-insensitive; `*.` = exactly
/// one DNS label; `**.` = one or more labels; an endpoint without host but with `allowed_ips` matches an
/// IP-literal host inside them) and the port (`port`/`ports`), and a binary (`binaries[].path`, `*`
/// within one path segment, `**` across segments) matching the executable or one of its ancestors.
/// Policies are tried by name in lexicographic order; the first match is recorded. A nil policy (none
/// ever loaded) denies everything. Deny reasons name the missing rule.
enum NetworkDecision {
  static func decide(
    _ policy: Openshell_Sandbox_V1_SandboxPolicy?, host rawHost: String, port: Int, binary: CallerBinary?
  ) -> NetworkVerdict {
    guard let policy else { return .deny(reason: "no valid network policy has been loaded (fail closed)") }
    let host = rawHost.lowercased()
    var hostPortMatched: [String] = []
    var needInspection: [String] = []
    for name in policy.networkPolicies.keys.sorted() {
      let rule = policy.networkPolicies[name]!
      let matching = rule.endpoints.filter { endpointMatches($0, host: host, port: port) }
      if !matching.isEmpty, matching.allSatisfy(needsInspection) { needInspection.append(name) }
      guard let endpoint = matching.first(where: { !needsInspection($0) }) else { continue }
      hostPortMatched.append(name)
      guard let binary else { continue }
      let candidates = [binary.path] + binary.ancestors
      if rule.binaries.contains(where: { b in candidates.contains { pathMatches(b.path, $0) } }) {
        return .allow(policy: name, allowedIPs: endpoint.allowedIps)
      }
    }
    if hostPortMatched.isEmpty, !needInspection.isEmpty {
      return .deny(reason: "network policy \(needInspection.joined(separator: ", ")) allows \(host):\(port) only with L7 rules (protocol: rest), which this proxy cannot inspect yet: denied (fail closed)")
    }
    if hostPortMatched.isEmpty {
      return .deny(reason: "no network policy has an endpoint for \(host):\(port)")
    }
    guard let binary else {
      return .deny(reason: "the calling process could not be identified (policies \(hostPortMatched.joined(separator: ", ")) allow \(host):\(port) only to listed binaries)")
    }
    return .deny(reason: "binary \(binary.path) is not listed in the binaries of network policy \(hostPortMatched.joined(separator: ", ")) for \(host):\(port)")
  }

  /// Whether `e` asks for L7 inspection (a `protocol` with method/path rules, deny rules or a restricted
  /// `access` preset, enforced) — which this proxy does not do yet. Such an endpoint never allows a
  /// connection: passing it through uninspected would allow more than the policy says (fail closed).
  /// `access: full` without rules and `enforcement: audit` ask for nothing the tunnel would not give.
  static func needsInspection(_ e: Openshell_Sandbox_V1_NetworkEndpoint) -> Bool {
    guard !e.protocol.isEmpty, e.enforcement != .audit else { return false }
    return !(e.access == .full && e.rules.isEmpty && e.denyRules.isEmpty)
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
    let p = Array(pattern.utf8), s = Array(path.utf8)
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
