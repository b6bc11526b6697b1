import Crypto
import Foundation
import OpenShellAPI
import SwiftProtobuf

/// The rules a sandbox policy must satisfy (openshell-behavior.md §7), shared by the CLI, the gateway
/// and the supervisor:
/// - ``safetyIssues(_:)`` — the gateway's checks (CreateSandbox, UpdateConfig);
/// - ``liveUpdateIssues(baseline:proposed:)`` — what may change on a running sandbox;
/// - ``l7Issues(_:)`` — the supervisor's checks when it loads a policy (a failure makes the revision
///   `failed` with the message).
/// Every issue names its field path.
public enum PolicyRules {
  /// The only user and group a sandbox process may run as; also the default filled into `process`
  /// (openshell-behavior.md §7: `run_as_user must be 'sandbox'`).
  public static let sandboxUser = "sandbox"
  /// Longest filesystem path accepted, bytes of UTF-8 (openshell-behavior.md §7:
  /// `path exceeds maximum length`).
  public static let maxPathLength = 4096
  /// Most `read_only` plus `read_write` paths accepted in one policy (openshell-behavior.md §7).
  public static let maxPaths = 256
  /// HTTP methods an L7 `allow.method` may name (compared upper-cased; `*` = any); anything else is
  /// `unknown HTTP method` (openshell-behavior.md §7, supervisor L7 validation).
  public static let httpMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "*"]

  /// Defaults filled (`process` user/group `sandbox`, landlock `best_effort`, rule names = keys) and
  /// `port` folded into `ports`, so equal policies hash equally.
  public static func normalized(_ policy: Openshell_Sandbox_V1_SandboxPolicy) -> Openshell_Sandbox_V1_SandboxPolicy {
    var p = policy
    if p.process.runAsUser.isEmpty { p.process.runAsUser = sandboxUser }
    if p.process.runAsGroup.isEmpty { p.process.runAsGroup = sandboxUser }
    if p.hasLandlock && p.landlock.compatibility.isEmpty { p.landlock.compatibility = "best_effort" }
    for (key, var rule) in p.networkPolicies {
      if rule.name.isEmpty { rule.name = key }
      for i in rule.endpoints.indices where rule.endpoints[i].port != 0 && rule.endpoints[i].ports.isEmpty {
        rule.endpoints[i].ports = [rule.endpoints[i].port]
        rule.endpoints[i].port = 0
      }
      p.networkPolicies[key] = rule
    }
    return p
  }

  /// Deterministic protobuf bytes of the normalized policy.
  public static func canonicalBytes(_ policy: Openshell_Sandbox_V1_SandboxPolicy) -> Data {
    var o = BinaryEncodingOptions()
    o.useDeterministicOrdering = true
    return (try? normalized(policy).serializedBytes(options: o) as Data) ?? Data()
  }

  /// Lower-case hex SHA-256 of ``canonicalBytes(_:)`` (the revision's content hash).
  public static func hash(_ policy: Openshell_Sandbox_V1_SandboxPolicy) -> String {
    SHA256.hash(data: canonicalBytes(policy)).map { String(format: "%02x", $0) }.joined()
  }

  /// The restrictive default (used when no policy exists anywhere).
  public static var restrictiveDefault: Openshell_Sandbox_V1_SandboxPolicy {
    .with {
      $0.version = 1
      $0.filesystem = .with {
        $0.includeWorkdir = true
        $0.readOnly = ["/usr", "/lib", "/proc", "/dev/urandom", "/app", "/etc", "/var/log"]
        $0.readWrite = ["/sandbox", "/tmp", "/dev/null"]
      }
      $0.landlock = .with { $0.compatibility = "best_effort" }
      $0.process = .with {
        $0.runAsUser = sandboxUser; $0.runAsGroup = sandboxUser
      }
    }
  }

  /// The filesystem section a sandbox starts with: the policy's own, else the restrictive default's
  /// (a policy without `filesystem_policy` never means "no filesystem limits").
  public static func startupFilesystem(_ policy: Openshell_Sandbox_V1_SandboxPolicy) -> Openshell_Sandbox_V1_FilesystemPolicy {
    policy.hasFilesystem ? policy.filesystem : restrictiveDefault.filesystem
  }

  /// The Landlock compatibility a sandbox starts with: the policy's own, else `best_effort` (the
  /// default's; openshell-behavior.md §7).
  public static func startupLandlockCompatibility(_ policy: Openshell_Sandbox_V1_SandboxPolicy) -> String {
    policy.landlock.compatibility.isEmpty ? "best_effort" : policy.landlock.compatibility
  }

  // MARK: gateway safety

  /// The gateway's safety validation; the RPC error is `policy contains unsafe content: <m1>; <m2>…`.
  public static func safetyIssues(_ policy: Openshell_Sandbox_V1_SandboxPolicy) -> [PolicyIssue] {
    let p = normalized(policy)
    var out: [PolicyIssue] = []
    if p.process.runAsUser != sandboxUser {
      out.append(PolicyIssue(path: "process.run_as_user", message: "run_as_user must be 'sandbox', got '\(p.process.runAsUser)'"))
    }
    if p.process.runAsGroup != sandboxUser {
      out.append(PolicyIssue(path: "process.run_as_group", message: "run_as_group must be 'sandbox', got '\(p.process.runAsGroup)'"))
    }
    let lists = [("read_only", p.filesystem.readOnly), ("read_write", p.filesystem.readWrite)]
    for (name, paths) in lists {
      for (i, path) in paths.enumerated() {
        let fp = "filesystem_policy.\(name)[\(i)]"
        if !path.hasPrefix("/") {
          out.append(PolicyIssue(path: fp, message: "path must be absolute (start with '/'): \(path)"))
        }
        if path.split(separator: "/", omittingEmptySubsequences: false).contains("..") {
          out.append(PolicyIssue(path: fp, message: "path contains '..' traversal component: \(path)"))
        }
        if name == "read_write" && !path.isEmpty && path.allSatisfy({ $0 == "/" }) {
          out.append(PolicyIssue(path: fp, message: "read-write path is overly broad: \(path)"))
        }
        if path.utf8.count > maxPathLength {
          out.append(PolicyIssue(path: fp, message: "path exceeds maximum length (\(path.utf8.count) > \(maxPathLength)): \(path.prefix(64))…"))
        }
      }
    }
    let total = p.filesystem.readOnly.count + p.filesystem.readWrite.count
    if total > maxPaths {
      out.append(PolicyIssue(path: "filesystem_policy", message: "too many filesystem paths (\(total) > \(maxPaths))"))
    }
    for key in p.networkPolicies.keys.sorted() {
      let rule = p.networkPolicies[key]!
      for (i, e) in rule.endpoints.enumerated() where isTLDWildcard(e.host) {
        out.append(
          PolicyIssue(
            path: "network_policies.\(key).endpoints[\(i)].host",
            message: "network policy '\(rule.name)': TLD wildcard '\(e.host)' is not allowed; use subdomain wildcards like '*.example.com' instead"))
      }
    }
    return out
  }

  /// `*.com`, `**.com`: a wildcard followed by a single label.
  static func isTLDWildcard(_ host: String) -> Bool {
    for prefix in ["**.", "*."] where host.hasPrefix(prefix) {
      let rest = host.dropFirst(prefix.count)
      return !rest.isEmpty && !rest.contains(".")
    }
    return false
  }

  // MARK: live updates

  /// Why a live change of a startup-only section is refused, and what applies it.
  public static let restartHint = "applied at startup; `sandbox stop` + `sandbox start` applies it"

  /// What may not change on a running sandbox: `filesystem_policy`, `landlock` and `process` are
  /// applied once, at start (Landlock cannot be widened or replaced on a running process), so any change
  /// is refused — OpenShell's messages for removals, and the same wording for additions, which OpenShell
  /// accepts but cannot apply; each names the section and says that a stop + start applies it. Network
  /// policies stay live.
  ///
  /// Sections are compared as the sandbox would start with them (``startupFilesystem(_:)``,
  /// ``startupLandlockCompatibility(_:)``, ``normalized(_:)``'s process user), the same way the
  /// supervisor compares a revision with its start-up plan: omitting a section that equals the
  /// default's is no change (a network-only policy is accepted on a sandbox that started with the
  /// restrictive default), omitting or adding one that differs from it is.
  public static func liveUpdateIssues(baseline: Openshell_Sandbox_V1_SandboxPolicy, proposed: Openshell_Sandbox_V1_SandboxPolicy) -> [PolicyIssue] {
    let b = normalized(baseline)
    let n = normalized(proposed)
    var out: [PolicyIssue] = []
    func issue(_ path: String, _ m: String) { out.append(PolicyIssue(path: path, message: "\(m) (\(restartHint))")) }
    let bf = startupFilesystem(b)
    let nf = startupFilesystem(n)
    if bf == nf {
      // Same paths as the sandbox started with (spelled out or taken from the default).
    } else if b.hasFilesystem && !n.hasFilesystem {
      issue("filesystem_policy", "filesystem policy cannot be removed on a live sandbox")
    } else if !b.hasFilesystem && n.hasFilesystem {
      issue("filesystem_policy", "filesystem policy cannot be added on a live sandbox")
    } else {
      if bf.includeWorkdir != nf.includeWorkdir {
        issue("filesystem_policy.include_workdir", "filesystem include_workdir cannot be changed on a live sandbox")
      }
      for (name, old, new) in [("read_only", bf.readOnly, nf.readOnly), ("read_write", bf.readWrite, nf.readWrite)] {
        for p in old where !new.contains(p) {
          issue("filesystem_policy.\(name)", "filesystem \(name) path '\(p)' cannot be removed on a live sandbox")
        }
        for p in new where !old.contains(p) {
          issue("filesystem_policy.\(name)", "filesystem \(name) path '\(p)' cannot be added on a live sandbox")
        }
      }
    }
    if startupLandlockCompatibility(b) != startupLandlockCompatibility(n) {
      issue("landlock", "landlock policy cannot be changed on a live sandbox")
    }
    if b.process != n.process {
      issue("process", "process policy cannot be changed on a live sandbox")
    }
    return out
  }

  // MARK: supervisor L7

  /// The supervisor's load-time validation (each message located at `network_policies.<key>.endpoints[i]`).
  public static func l7Issues(_ policy: Openshell_Sandbox_V1_SandboxPolicy) -> [PolicyIssue] {
    var out: [PolicyIssue] = []
    for key in policy.networkPolicies.keys.sorted() {
      for (i, e) in policy.networkPolicies[key]!.endpoints.enumerated() {
        let at = "network_policies.\(key).endpoints[\(i)]"
        func issue(_ m: String, _ field: String = "") {
          out.append(PolicyIssue(path: field.isEmpty ? at : "\(at).\(field)", message: m))
        }
        let host = e.host
        if host == "*" || host == "**" {
          issue("host '\(host)' matches all hosts; list the hosts to allow", "host")
        } else if host.contains("*") && !(host.hasPrefix("*.") || host.hasPrefix("**.")) {
          issue("wildcard host '\(host)' must start with '*.' (one label) or '**.' (any depth)", "host")
        } else if host.dropFirst(host.hasPrefix("**.") ? 3 : host.hasPrefix("*.") ? 2 : 0).contains("*") {
          issue("wildcard host '\(host)' may contain '*' only in its first label", "host")
        } else if isTLDWildcard(host) {
          issue("TLD wildcard '\(host)' is not allowed; use subdomain wildcards like '*.example.com' instead", "host")
        }
        if e.port != 0 && !e.ports.isEmpty && e.ports != [e.port] {
          issue("port and ports are mutually exclusive; use ports for multiple ports", "port")
        }
        if e.ports.contains(0) { issue("port 0 is not a valid port", "ports") }
        let hasRules = !e.rules.isEmpty
        let hasAccess = e.access != .unspecified
        if hasRules && hasAccess { issue("rules and access are mutually exclusive") }
        if !e.protocol.isEmpty && !hasRules && !hasAccess { issue("protocol requires rules or access to define allowed traffic") }
        if !e.protocol.isEmpty && !Names.protocols.contains(e.protocol) {
          issue("unknown protocol '\(e.protocol)' (expected rest or sql)", "protocol")
        }
        if e.protocol == "sql" && e.enforcement == .enforce {
          issue("SQL enforcement requires full SQL parsing (not available in v1). Use enforcement: audit.")
        }
        // Placeholders are resolved in bodies only where the proxy sees plaintext (policy-schema: "on a
        // protocol: rest endpoint"); elsewhere the flag would promise what cannot happen.
        if e.requestBodyCredentialRewrite && (e.protocol != "rest" || e.tls == .skip) {
          issue(
            "request_body_credential_rewrite requires protocol: rest without tls: skip (bodies are rewritten only where the proxy inspects them)",
            "request_body_credential_rewrite")
        }
        if e.websocketCredentialRewrite && (e.protocol != "rest" || e.tls == .skip) {
          issue(
            "websocket_credential_rewrite requires protocol: rest without tls: skip (messages are rewritten only where the proxy inspects them)",
            "websocket_credential_rewrite")
        }
        if !e.credentialSigning.isEmpty {
          if !["sigv4", "sigv4:body", "sigv4:no_body"].contains(e.credentialSigning) {
            issue("credential_signing must be sigv4, sigv4:body or sigv4:no_body", "credential_signing")
          }
          if e.signingService.isEmpty { issue("signing_service is required when credential_signing is set", "signing_service") }
          if e.protocol != "rest" || e.tls == .skip {
            issue(
              "credential_signing requires protocol: rest without tls: skip (requests are re-signed only where the proxy inspects them)", "credential_signing")
          }
          if e.requestBodyCredentialRewrite {
            issue("credential_signing and request_body_credential_rewrite are mutually exclusive", "credential_signing")
          }
        }
        if !e.denyRules.isEmpty {
          if e.protocol.isEmpty { issue("deny_rules require protocol (L7 inspection must be enabled)") }
          if !hasRules && !hasAccess { issue("deny_rules require rules or access to define the base allow set") }
        }
        for (j, r) in e.rules.enumerated() {
          let m = r.allow.method
          if !m.isEmpty && !httpMethods.contains(m.uppercased()) { issue("unknown HTTP method '\(m)'", "rules[\(j)].allow.method") }
          for (k, q) in r.allow.query.sorted(by: { $0.key < $1.key }) {
            if !q.glob.isEmpty && !q.any.isEmpty { issue("cannot specify both glob and any", "rules[\(j)].allow.query.\(k)") }
          }
        }
        for (j, r) in e.denyRules.enumerated() {
          if !r.method.isEmpty && !httpMethods.contains(r.method.uppercased()) { issue("unknown HTTP method '\(r.method)'", "deny_rules[\(j)].method") }
          for (k, q) in r.query.sorted(by: { $0.key < $1.key }) {
            if !q.glob.isEmpty && !q.any.isEmpty { issue("cannot specify both glob and any", "deny_rules[\(j)].query.\(k)") }
          }
        }
        for (j, ip) in e.allowedIps.enumerated() where !isIPOrCIDR(ip) {
          issue("'\(ip)' is not an IP address or CIDR", "allowed_ips[\(j)]")
        }
      }
    }
    return out
  }

  /// Non-fatal warnings on a loaded policy (deprecated TLS modes, `tls: skip` with L7 on 443).
  public static func l7Warnings(_ policy: Openshell_Sandbox_V1_SandboxPolicy) -> [PolicyIssue] {
    var out: [PolicyIssue] = []
    for key in policy.networkPolicies.keys.sorted() {
      for (i, e) in policy.networkPolicies[key]!.endpoints.enumerated() {
        let at = "network_policies.\(key).endpoints[\(i)]"
        if e.tls == .terminate || e.tls == .passthrough {
          out.append(
            PolicyIssue(path: "\(at).tls", message: "tls: \(e.tls == .terminate ? "terminate" : "passthrough") is deprecated; TLS is detected automatically"))
        }
        if e.tls == .skip && !e.protocol.isEmpty && (e.ports.contains(443) || e.port == 443) {
          out.append(PolicyIssue(path: "\(at).tls", message: "tls: skip with L7 inspection on port 443 cannot inspect encrypted traffic"))
        }
      }
    }
    return out
  }

  static func isIPOrCIDR(_ s: String) -> Bool {
    let parts = s.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count <= 2, let addr = parts.first else { return false }
    let isV4 =
      addr.split(separator: ".", omittingEmptySubsequences: false).count == 4
      && addr.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { UInt8($0) != nil }
    let isV6 = !isV4 && addr.contains(":") && addr.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
    guard isV4 || isV6 else { return false }
    if parts.count == 2 {
      guard let bits = Int(parts[1]), bits >= 0, bits <= (isV4 ? 32 : 128) else { return false }
    }
    return true
  }

  /// `policy contains unsafe content: …` for a non-empty list.
  public static func unsafeMessage(_ issues: [PolicyIssue]) -> String {
    "policy contains unsafe content: " + issues.map(\.message).joined(separator: "; ")
  }
}
