import Foundation
import OpenShellAPI
import Yams

/// YAML names of the contract's enums.
enum Names {
  static let tls: [String: Openshell_Sandbox_V1_NetworkTlsMode] = ["skip": .skip, "terminate": .terminate, "passthrough": .passthrough]
  static let enforcement: [String: Openshell_Sandbox_V1_NetworkEnforcementMode] = ["enforce": .enforce, "audit": .audit]
  static let access: [String: Openshell_Sandbox_V1_NetworkAccessPreset] = ["read-only": .readOnly, "read-write": .readWrite, "full": .full]
  static let protocols = ["rest", "sql"]
  static let compatibility = ["best_effort", "hard_requirement"]
}

/// A recursive-descent reader over Yams nodes that records every issue instead of stopping at the first.
struct Parser {
  var issues: [PolicyIssue] = []
  var warnings: [PolicyIssue] = []
  var lines: [String: Int] = [:]

  mutating func fail(_ path: String, _ node: Node?, _ message: String) {
    issues.append(PolicyIssue(path: path, line: node?.mark?.line, message: message))
  }

  func join(_ base: String, _ key: String) -> String { base.isEmpty ? key : "\(base).\(key)" }

  func isNull(_ node: Node) -> Bool {
    if case .scalar(let s) = node {
      return s.tag.description == Tag.Name.null.rawValue || (s.style == .plain && ["", "~", "null", "Null", "NULL"].contains(s.string))
    }
    return false
  }

  /// The pairs of a mapping, checking for unknown and duplicate keys. nil (after an issue) if not a mapping.
  mutating func mapping(_ node: Node, _ path: String, allowed: Set<String>?) -> [(String, Node)]? {
    lines[path] = node.mark?.line ?? lines[path]
    if isNull(node) { return [] }
    guard case .mapping(let m) = node else {
      fail(path, node, "expected a mapping")
      return nil
    }
    var out: [(String, Node)] = []
    var seen = Set<String>()
    for (k, v) in m {
      guard case .scalar(let ks) = k else {
        fail(path, k, "keys must be strings")
        continue
      }
      let key = ks.string
      let child = join(path, key)
      lines[child] = k.mark?.line
      if let allowed, !allowed.contains(key) {
        let known = allowed.sorted().joined(separator: ", ")
        fail(child, k, "unknown field `\(PolicyYAML.escaped(key, limit: 40))`, expected one of \(known)")
        continue
      }
      if !seen.insert(key).inserted {
        fail(child, k, "duplicate field `\(PolicyYAML.escaped(key, limit: 40))`")
        continue
      }
      out.append((key, v))
    }
    return out
  }

  mutating func sequence(_ node: Node, _ path: String) -> [Node]? {
    if isNull(node) { return [] }
    guard case .sequence(let s) = node else {
      fail(path, node, "expected a list")
      return nil
    }
    return Array(s)
  }

  mutating func string(_ node: Node, _ path: String) -> String? {
    guard case .scalar(let s) = node else {
      fail(path, node, "expected a string")
      return nil
    }
    if isNull(node) { return "" }
    return s.string
  }

  mutating func bool(_ node: Node, _ path: String) -> Bool? {
    guard case .scalar(let s) = node, ["true", "false", "True", "False", "TRUE", "FALSE"].contains(s.string), s.style == .plain else {
      fail(path, node, "expected a boolean (true or false)")
      return nil
    }
    return s.string.lowercased() == "true"
  }

  mutating func unsigned(_ node: Node, _ path: String, max: UInt64, what: String) -> UInt64? {
    guard case .scalar(let s) = node, s.style == .plain, let v = UInt64(s.string) else {
      fail(path, node, "expected \(what)")
      return nil
    }
    guard v <= max else {
      fail(path, node, "\(v) is out of range for \(what) (maximum \(max))")
      return nil
    }
    return v
  }

  mutating func strings(_ node: Node, _ path: String) -> [String] {
    guard let items = sequence(node, path) else { return [] }
    var out: [String] = []
    for (i, item) in items.enumerated() {
      let p = "\(path)[\(i)]"
      lines[p] = item.mark?.line
      if let s = string(item, p) { out.append(s) }
    }
    return out
  }

  mutating func choice<T>(_ node: Node, _ path: String, _ table: [String: T]) -> T? {
    guard let s = string(node, path) else { return nil }
    guard let v = table[s] else {
      fail(path, node, "unknown value \(PolicyYAML.escaped(s, limit: 40, quoted: true)), expected one of \(table.keys.sorted().joined(separator: ", "))")
      return nil
    }
    return v
  }

  // MARK: schema

  mutating func policy(_ node: Node) -> Openshell_Sandbox_V1_SandboxPolicy {
    var p = Openshell_Sandbox_V1_SandboxPolicy()
    guard let top = mapping(node, "", allowed: ["version", "filesystem_policy", "landlock", "process", "network_policies"]) else { return p }
    var hasVersion = false
    for (key, v) in top {
      switch key {
      case "version":
        hasVersion = true
        if let n = unsigned(v, key, max: UInt64(UInt32.max), what: "an unsigned 32-bit integer") { p.version = UInt32(n) }
      case "filesystem_policy":
        var f = Openshell_Sandbox_V1_FilesystemPolicy()
        for (k, fv) in mapping(v, key, allowed: ["include_workdir", "read_only", "read_write"]) ?? [] {
          let path = join(key, k)
          switch k {
          case "include_workdir": f.includeWorkdir = bool(fv, path) ?? false
          case "read_only": f.readOnly = strings(fv, path)
          default: f.readWrite = strings(fv, path)
          }
        }
        p.filesystem = f
      case "landlock":
        var l = Openshell_Sandbox_V1_LandlockPolicy()
        for (k, lv) in mapping(v, key, allowed: ["compatibility"]) ?? [] {
          let path = join(key, k)
          if let s = string(lv, path) {
            if Names.compatibility.contains(s) {
              l.compatibility = s
            } else {
              fail(path, lv, "unknown value \(PolicyYAML.escaped(s, limit: 40, quoted: true)), expected one of \(Names.compatibility.joined(separator: ", "))")
            }
          }
        }
        p.landlock = l
      case "process":
        var pr = Openshell_Sandbox_V1_ProcessPolicy()
        for (k, pv) in mapping(v, key, allowed: ["run_as_user", "run_as_group"]) ?? [] {
          let s = string(pv, join(key, k)) ?? ""
          if k == "run_as_user" { pr.runAsUser = s } else { pr.runAsGroup = s }
        }
        p.process = pr
      default:
        for (name, rv) in mapping(v, key, allowed: nil) ?? [] {
          p.networkPolicies[name] = rule(rv, join(key, name), key: name)
        }
      }
    }
    if !hasVersion { fail("version", nil, "missing field `version`") }
    return p
  }

  mutating func rule(_ node: Node, _ path: String, key: String) -> Openshell_Sandbox_V1_NetworkPolicyRule {
    var r = Openshell_Sandbox_V1_NetworkPolicyRule()
    for (k, v) in mapping(node, path, allowed: ["name", "binaries", "endpoints"]) ?? [] {
      let p = join(path, k)
      switch k {
      case "name": r.name = string(v, p) ?? ""
      case "binaries":
        for (i, b) in (sequence(v, p) ?? []).enumerated() {
          let bp = "\(p)[\(i)]"
          var bin = Openshell_Sandbox_V1_NetworkBinary()
          for (bk, bv) in mapping(b, bp, allowed: ["path", "harness"]) ?? [] {
            if bk == "path" {
              bin.path = string(bv, join(bp, bk)) ?? ""
            } else {
              _ = bool(bv, join(bp, bk))
              warnings.append(PolicyIssue(path: join(bp, bk), line: bv.mark?.line, message: "harness is deprecated and ignored"))
            }
          }
          if bin.path.isEmpty { fail(bp, b, "missing field `path`") }
          r.binaries.append(bin)
        }
      default:
        for (i, e) in (sequence(v, p) ?? []).enumerated() { r.endpoints.append(endpoint(e, "\(p)[\(i)]")) }
      }
    }
    if r.name.isEmpty { r.name = key }
    return r
  }

  mutating func endpoint(_ node: Node, _ path: String) -> Openshell_Sandbox_V1_NetworkEndpoint {
    var e = Openshell_Sandbox_V1_NetworkEndpoint()
    let allowed: Set<String> = [
      "host", "port", "ports", "protocol", "tls", "enforcement", "access", "rules", "deny_rules", "allowed_ips", "allow_encoded_slash",
      "request_body_credential_rewrite", "websocket_credential_rewrite", "credential_signing", "signing_service", "signing_region",
    ]
    var sawPort = false
    var sawPorts = false
    for (k, v) in mapping(node, path, allowed: allowed) ?? [] {
      let p = join(path, k)
      switch k {
      case "host": e.host = string(v, p) ?? ""
      case "port":
        sawPort = true
        if let n = unsigned(v, p, max: 65535, what: "a port number (u16)") { e.port = UInt32(n) }
      case "ports":
        sawPorts = true
        for (i, pv) in (sequence(v, p) ?? []).enumerated() {
          if let n = unsigned(pv, "\(p)[\(i)]", max: 65535, what: "a port number (u16)") { e.ports.append(UInt32(n)) }
        }
      case "protocol":
        if let s = string(v, p) {
          if s.isEmpty || Names.protocols.contains(s) {
            e.protocol = s
          } else {
            fail(p, v, "unknown value \(PolicyYAML.escaped(s, limit: 40, quoted: true)), expected one of rest, sql (or omit it for L4 passthrough)")
          }
        }
      case "tls":
        if let t = choice(v, p, Names.tls) {
          e.tls = t
          if t != .skip {
            warnings.append(
              PolicyIssue(
                path: p, line: v.mark?.line, message: "tls: \(t == .terminate ? "terminate" : "passthrough") is deprecated; TLS is detected automatically"))
          }
        }
      case "enforcement": if let t = choice(v, p, Names.enforcement) { e.enforcement = t }
      case "access": if let t = choice(v, p, Names.access) { e.access = t }
      case "allowed_ips": e.allowedIps = strings(v, p)
      case "allow_encoded_slash": e.allowEncodedSlash = bool(v, p) ?? false
      case "request_body_credential_rewrite": e.requestBodyCredentialRewrite = bool(v, p) ?? false
      case "websocket_credential_rewrite": e.websocketCredentialRewrite = bool(v, p) ?? false
      case "credential_signing": e.credentialSigning = string(v, p) ?? ""
      case "signing_service": e.signingService = string(v, p) ?? ""
      case "signing_region": e.signingRegion = string(v, p) ?? ""
      case "rules":
        let items = sequence(v, p) ?? []
        if items.isEmpty, sequence(v, p) != nil {
          fail(p, v, "rules list cannot be empty (would deny all traffic). Use access: full or remove rules.")
        }
        for (i, item) in items.enumerated() {
          let rp = "\(p)[\(i)]"
          var rule = Openshell_Sandbox_V1_L7Rule()
          for (rk, rv) in mapping(item, rp, allowed: ["allow"]) ?? [] {
            let m = matcher(rv, join(rp, rk))
            rule.allow = .with {
              $0.method = m.method; $0.path = m.path; $0.command = m.command; $0.query = m.query
            }
          }
          if !rule.hasAllow { fail(rp, item, "missing field `allow`") }
          e.rules.append(rule)
        }
      default:  // deny_rules
        let items = sequence(v, p) ?? []
        if items.isEmpty, sequence(v, p) != nil {
          fail(p, v, "deny_rules list cannot be empty (remove deny_rules or add at least one rule)")
        }
        for (i, item) in items.enumerated() {
          let m = matcher(item, "\(p)[\(i)]")
          e.denyRules.append(
            .with {
              $0.method = m.method; $0.path = m.path; $0.command = m.command; $0.query = m.query
            })
        }
      }
    }
    if sawPort && sawPorts {
      fail(join(path, "port"), node, "port and ports are mutually exclusive; use ports for multiple ports")
    }
    if e.host.isEmpty { fail(join(path, "host"), node, "missing field `host`") }
    return e
  }

  struct Matcher {
    var method = "", path = "", command = ""
    var query: [String: Openshell_Sandbox_V1_L7QueryMatcher] = [:]
  }

  mutating func matcher(_ node: Node, _ path: String) -> Matcher {
    var m = Matcher()
    for (k, v) in mapping(node, path, allowed: ["method", "path", "command", "query"]) ?? [] {
      let p = join(path, k)
      switch k {
      case "method": m.method = string(v, p) ?? ""
      case "path": m.path = string(v, p) ?? ""
      case "command": m.command = string(v, p) ?? ""
      default:
        for (param, qv) in mapping(v, p, allowed: nil) ?? [] {
          let qp = join(p, param)
          switch qv {
          case .scalar(let s): m.query[param] = .with { $0.glob = s.string }
          case .mapping:
            var q = Openshell_Sandbox_V1_L7QueryMatcher()
            var sawGlob = false
            var sawAny = false
            for (mk, mv) in mapping(qv, qp, allowed: nil) ?? [] {
              switch mk {
              case "glob":
                sawGlob = true
                q.glob = string(mv, join(qp, mk)) ?? ""
              case "any":
                sawAny = true
                q.any = strings(mv, join(qp, mk))
                if q.any.isEmpty { fail(join(qp, mk), mv, "any: list must not be empty") }
              default:
                fail(join(qp, mk), mv, "only glob or any are supported")
              }
            }
            if sawGlob && sawAny { fail(qp, qv, "cannot specify both glob and any") }
            if !sawGlob && !sawAny { fail(qp, qv, "expected string glob or object with any") }
            m.query[param] = q
          default:
            fail(qp, qv, "expected string glob or object with any")
          }
        }
      }
    }
    return m
  }
}
