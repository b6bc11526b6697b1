import Foundation
import OpenShellAPI
import Yams

#if canImport(Glibc)
  import Glibc
#endif

/// One problem found in a sandbox policy: the field path (`network_policies.api.endpoints[0].port`),
/// the YAML line when the policy came from YAML, and what is wrong.
public struct PolicyIssue: Error, Sendable, Equatable, CustomStringConvertible {
  public var path: String
  public var line: Int?
  public var message: String

  public init(path: String, line: Int? = nil, message: String) {
    self.path = path
    self.line = line
    self.message = message
  }

  /// One line: control characters (a quoted key may hold a newline) are escaped and a very long
  /// field path is shortened.
  public var description: String {
    let at = line.map { " (line \($0))" } ?? ""
    let shownPath = PolicyYAML.escaped(path, limit: 160)
    return path.isEmpty ? "\(PolicyYAML.escaped(message, limit: 600))\(at)" : "\(shownPath)\(at): \(PolicyYAML.escaped(message, limit: 600))"
  }
}

/// A policy file that cannot be used as text: it cannot be read, or is not UTF-8.
public struct PolicyFileError: Error, Sendable, Equatable, CustomStringConvertible {
  public var path: String
  /// Why it cannot be read (`strerror`), or nil when it was read but is not UTF-8 text.
  public var reason: String?

  public init(path: String, reason: String?) {
    self.path = path
    self.reason = reason
  }

  public var description: String {
    if let reason { return "cannot read policy file \(path): \(reason)" }
    return "policy file \(path) is not UTF-8 text"
  }
}

/// Parsing failed: every structural problem found (unknown keys, wrong types, bad enum values).
public struct PolicyParseError: Error, Sendable, CustomStringConvertible {
  public var issues: [PolicyIssue]
  public init(_ issues: [PolicyIssue]) { self.issues = issues }
  public var description: String {
    "failed to parse sandbox policy YAML: " + issues.map(\.description).joined(separator: "; ")
  }
}

/// A parsed policy plus where each field path was found in the YAML (for line numbers in later checks).
public struct ParsedPolicy: Sendable {
  public var policy: Openshell_Sandbox_V1_SandboxPolicy
  /// Field path → 1-based YAML line.
  public var lines: [String: Int]
  /// Deprecation and style warnings (never fatal).
  public var warnings: [PolicyIssue]

  /// The line of `path`, or of its nearest ancestor that has one.
  public func line(of path: String) -> Int? {
    var p = path
    while !p.isEmpty {
      if let l = lines[p] { return l }
      if let i = p.lastIndex(where: { $0 == "." || $0 == "[" }) { p = String(p[..<i]) } else { break }
    }
    return nil
  }

  /// Attaches YAML lines to issues produced by the validators.
  public func locate(_ issues: [PolicyIssue]) -> [PolicyIssue] {
    issues.map { var i = $0; if i.line == nil { i.line = line(of: i.path) }; return i }
  }
}

/// The OpenShell sandbox policy YAML (openshell-behavior.md §7, v0.0.30 schema) ↔ the contract's
/// `openshell.sandbox.v1.SandboxPolicy`.
///
/// Keys (unknown keys are rejected at every level, as serde's `deny_unknown_fields`):
/// `version` (required u32), `filesystem_policy{include_workdir, read_only, read_write}`,
/// `landlock{compatibility}`, `process{run_as_user, run_as_group}`,
/// `network_policies{<key>: {name, binaries[{path, harness}], endpoints[…]}}`; endpoint keys `host`,
/// `port`, `ports`, `protocol`, `tls`, `enforcement`, `access`, `rules[{allow{method, path, command,
/// query}}]`, `deny_rules[{method, path, command, query}]`, `allowed_ips`, `allow_encoded_slash`,
/// `request_body_credential_rewrite`, `websocket_credential_rewrite`, `credential_signing`, `signing_service`, `signing_region` (a later
/// schema's keys, in the contract's proto).
/// YAML `filesystem_policy` is proto `filesystem`; `port` is normalized into `ports`.
public enum PolicyYAML {
  /// Parses and normalizes; structural problems (and the YAML-only rules that the proto cannot
  /// express: empty `rules`/`deny_rules` lists, `port` with `ports`, query-matcher shapes) throw.
  public static func parse(_ text: String) throws -> ParsedPolicy {
    let node: Node?
    do {
      node = try Yams.compose(yaml: text)
    } catch let e as YamlError {
      throw PolicyParseError([yamlIssue(e)])
    }
    guard let node else { throw PolicyParseError([PolicyIssue(path: "", message: "the policy is empty")]) }
    var p = Parser()
    let policy = p.policy(node)
    if !p.issues.isEmpty { throw PolicyParseError(p.issues) }
    return ParsedPolicy(policy: PolicyRules.normalized(policy), lines: p.lines, warnings: p.warnings)
  }

  /// Parses the file at `path` (the CLI's `--policy FILE`).
  /// - Throws: `PolicyFileError` when the file cannot be read or is not UTF-8 text, else as `parse(_:)`.
  public static func parse(contentsOf path: String) throws -> ParsedPolicy {
    try parse(readText(path))
  }

  /// The UTF-8 text of the file at `path`.
  /// - Throws: `PolicyFileError` naming the path and the reason (`No such file or directory`, …).
  public static func readText(_ path: String) throws(PolicyFileError) -> String {
    let data: Data
    do {
      data = try Data(contentsOf: URL(fileURLWithPath: path), options: .uncached)
    } catch {
      throw PolicyFileError(path: path, reason: readFailure(path, error))
    }
    guard let text = String(data: data, encoding: .utf8) else { throw PolicyFileError(path: path, reason: nil) }
    return text
  }

  /// `strerror` of the failed read (Foundation's error text varies between platforms and versions).
  static func readFailure(_ path: String, _ error: any Error) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return String(cString: strerror(errno)) }
    defer { close(fd) }
    var byte: UInt8 = 0
    if read(fd, &byte, 1) < 0 { return String(cString: strerror(errno)) }
    let ns = error as NSError
    if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
      return String(cString: strerror(Int32(underlying.code)))
    }
    return escaped(ns.localizedDescription, limit: 200)
  }

  /// A YAML syntax error as one short issue: where, and what libyaml says (never the offending text).
  static func yamlIssue(_ e: YamlError) -> PolicyIssue {
    func located(_ context: YamlError.Context?, _ problem: String, _ mark: Mark) -> PolicyIssue {
      var message = "invalid YAML: \(problem) at column \(mark.column)"
      if let context { message += " (\(context.text) at line \(context.mark.line))" }
      return PolicyIssue(path: "", line: mark.line, message: message)
    }
    switch e {
    case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
      .composer(let context, let problem, let mark, _):
      return located(context, problem, mark)
    case .reader(let problem, let offset, let value, let yaml):
      var message = "invalid YAML: \(problem)"
      if value >= 0 {
        let hex = String(UInt32(bitPattern: value), radix: 16, uppercase: true)
        message += " (character U+\(String(repeating: "0", count: max(0, 4 - hex.count)) + hex))"
      }
      let line = offset.map { o in 1 + yaml.prefix(o).reduce(0) { $1.isNewline ? $0 + 1 : $0 } }
      return PolicyIssue(path: "", line: line, message: message)
    case .duplicatedKeysInMapping(let duplicates, let context):
      let keys = duplicates.sorted().prefix(5).map { escaped($0, limit: 40, quoted: true) }.joined(separator: ", ")
      return PolicyIssue(path: "", line: context.mark.line, message: "invalid YAML: duplicate keys \(keys)")
    default:
      return PolicyIssue(path: "", message: "invalid YAML: \(escaped("\(e)", limit: 200))")
    }
  }

  /// `s` on one line and short: control characters and line breaks escaped (`\n`, `\u{1}`), at most
  /// `limit` characters (then `…`), optionally in double quotes.
  public static func escaped(_ s: String, limit: Int, quoted: Bool = false) -> String {
    var out = ""
    var count = 0
    for c in s.unicodeScalars {
      if count >= limit {
        out += "…"
        break
      }
      switch c {
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case "\"" where quoted: out += "\\\""
      case "\\" where quoted: out += "\\\\"
      default:
        if c.properties.generalCategory == .control || c.properties.generalCategory == .format
          || c.properties.generalCategory == .lineSeparator || c.properties.generalCategory == .paragraphSeparator
        {
          out += "\\u{\(String(c.value, radix: 16))}"
        } else {
          out.unicodeScalars.append(c)
        }
      }
      count += 1
    }
    return quoted ? "\"\(out)\"" : out
  }

  /// Every problem: structural, gateway safety rules and the supervisor's L7 rules, with lines.
  /// An empty result means every component will accept the policy.
  public static func check(_ text: String) -> [PolicyIssue] {
    do {
      let parsed = try parse(text)
      return parsed.locate(PolicyRules.safetyIssues(parsed.policy) + PolicyRules.l7Issues(parsed.policy))
    } catch let e as PolicyParseError {
      return e.issues
    } catch {
      return [PolicyIssue(path: "", message: "\(error)")]
    }
  }

  // MARK: rendering

  /// The policy as YAML in the same schema (round-trips through `parse`).
  public static func render(_ policy: Openshell_Sandbox_V1_SandboxPolicy) -> String {
    var out = "version: \(policy.version)\n"
    if policy.hasFilesystem {
      let f = policy.filesystem
      out += "filesystem_policy:\n  include_workdir: \(f.includeWorkdir)\n"
      out += list("read_only", f.readOnly, indent: 2)
      out += list("read_write", f.readWrite, indent: 2)
    }
    if policy.hasLandlock { out += "landlock:\n  compatibility: \(q(policy.landlock.compatibility))\n" }
    if policy.hasProcess {
      out += "process:\n  run_as_user: \(q(policy.process.runAsUser))\n  run_as_group: \(q(policy.process.runAsGroup))\n"
    }
    if policy.networkPolicies.isEmpty { return out }
    out += "network_policies:\n"
    for key in policy.networkPolicies.keys.sorted() {
      let r = policy.networkPolicies[key]!
      out += "  \(q(key)):\n    name: \(q(r.name.isEmpty ? key : r.name))\n"
      if !r.endpoints.isEmpty {
        out += "    endpoints:\n"
        for e in r.endpoints { out += endpoint(e) }
      }
      if !r.binaries.isEmpty {
        out += "    binaries:\n"
        for b in r.binaries { out += "      - path: \(q(b.path))\n" }
      }
    }
    return out
  }

  static func endpoint(_ e: Openshell_Sandbox_V1_NetworkEndpoint) -> String {
    var lines: [String] = ["host: \(q(e.host))"]
    if e.port != 0 && e.ports.isEmpty { lines.append("port: \(e.port)") }
    if e.ports.count == 1 { lines.append("port: \(e.ports[0])") }
    if e.ports.count > 1 { lines.append("ports: [\(e.ports.map(String.init).joined(separator: ", "))]") }
    if !e.protocol.isEmpty { lines.append("protocol: \(q(e.protocol))") }
    if let t = Names.tls.first(where: { $0.value == e.tls })?.key { lines.append("tls: \(t)") }
    if let t = Names.enforcement.first(where: { $0.value == e.enforcement })?.key { lines.append("enforcement: \(t)") }
    if let t = Names.access.first(where: { $0.value == e.access })?.key { lines.append("access: \(t)") }
    if e.allowEncodedSlash { lines.append("allow_encoded_slash: true") }
    if e.requestBodyCredentialRewrite { lines.append("request_body_credential_rewrite: true") }
    if e.websocketCredentialRewrite { lines.append("websocket_credential_rewrite: true") }
    if !e.credentialSigning.isEmpty { lines.append("credential_signing: \(q(e.credentialSigning))") }
    if !e.signingService.isEmpty { lines.append("signing_service: \(q(e.signingService))") }
    if !e.signingRegion.isEmpty { lines.append("signing_region: \(q(e.signingRegion))") }
    if !e.rules.isEmpty {
      lines.append("rules:")
      for r in e.rules {
        lines.append("  - allow:")
        lines += matcher(r.allow.method, r.allow.path, r.allow.command, r.allow.query).map { "      " + $0 }
      }
    }
    if !e.denyRules.isEmpty {
      lines.append("deny_rules:")
      for r in e.denyRules {
        let m = matcher(r.method, r.path, r.command, r.query)
        lines += m.enumerated().map { ($0.offset == 0 ? "  - " : "    ") + $0.element }
      }
    }
    if !e.allowedIps.isEmpty { lines.append("allowed_ips: [\(e.allowedIps.map(q).joined(separator: ", "))]") }
    return lines.enumerated().map { ($0.offset == 0 ? "      - " : "        ") + $0.element + "\n" }.joined()
  }

  static func matcher(_ method: String, _ path: String, _ command: String, _ query: [String: Openshell_Sandbox_V1_L7QueryMatcher]) -> [String] {
    var out: [String] = []
    if !method.isEmpty { out.append("method: \(q(method))") }
    if !path.isEmpty { out.append("path: \(q(path))") }
    if !command.isEmpty { out.append("command: \(q(command))") }
    if !query.isEmpty {
      out.append("query:")
      for k in query.keys.sorted() {
        let m = query[k]!
        out.append(m.any.isEmpty ? "  \(q(k)): \(q(m.glob))" : "  \(q(k)): {any: [\(m.any.map(q).joined(separator: ", "))]}")
      }
    }
    if out.isEmpty { out.append("{}") }
    return out
  }

  static func list(_ key: String, _ items: [String], indent: Int) -> String {
    let pad = String(repeating: " ", count: indent)
    if items.isEmpty { return "\(pad)\(key): []\n" }
    return "\(pad)\(key):\n" + items.map { "\(pad)  - \(q($0))\n" }.joined()
  }

  /// A YAML scalar: plain when that reads back as the same string, else double-quoted.
  static func q(_ s: String) -> String {
    let plainSafe = !s.isEmpty && s.unicodeScalars.allSatisfy { c in
      CharacterSet.alphanumerics.contains(c) || "/_.-".unicodeScalars.contains(c)
    } && !["true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"].contains(s.lowercased())
      && Double(s) == nil && !s.hasPrefix("-")
    if plainSafe { return s }
    var e = "\""
    for c in s.unicodeScalars {
      switch c {
      case "\"": e += "\\\""
      case "\\": e += "\\\\"
      case "\n": e += "\\n"
      case "\t": e += "\\t"
      default: e.unicodeScalars.append(c)
      }
    }
    return e + "\""
  }
}

/// YAML names of the contract's enums.
enum Names {
  static let tls: [String: Openshell_Sandbox_V1_NetworkTlsMode] = ["skip": .skip, "terminate": .terminate, "passthrough": .passthrough]
  static let enforcement: [String: Openshell_Sandbox_V1_NetworkEnforcementMode] = ["enforce": .enforce, "audit": .audit]
  static let access: [String: Openshell_Sandbox_V1_NetworkAccessPreset] = ["read-only": .readOnly, "read-write": .readWrite, "full": .full]
  static let protocols = ["rest", "sql"]
  static let compatibility = ["best_effort", "hard_requirement"]
}

/// A recursive-descent reader over Yams nodes that records every issue instead of stopping at the first.
private struct Parser {
  var issues: [PolicyIssue] = []
  var warnings: [PolicyIssue] = []
  var lines: [String: Int] = [:]

  mutating func fail(_ path: String, _ node: Node?, _ message: String) {
    issues.append(PolicyIssue(path: path, line: node?.mark?.line, message: message))
  }

  func join(_ base: String, _ key: String) -> String { base.isEmpty ? key : "\(base).\(key)" }

  func isNull(_ node: Node) -> Bool {
    if case .scalar(let s) = node { return s.tag.description == Tag.Name.null.rawValue || (s.style == .plain && ["", "~", "null", "Null", "NULL"].contains(s.string)) }
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
            if Names.compatibility.contains(s) { l.compatibility = s } else {
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
            if bk == "path" { bin.path = string(bv, join(bp, bk)) ?? "" } else {
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
    let allowed: Set<String> = ["host", "port", "ports", "protocol", "tls", "enforcement", "access", "rules", "deny_rules", "allowed_ips", "allow_encoded_slash", "request_body_credential_rewrite", "websocket_credential_rewrite", "credential_signing", "signing_service", "signing_region"]
    var sawPort = false, sawPorts = false
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
          if s.isEmpty || Names.protocols.contains(s) { e.protocol = s } else {
            fail(p, v, "unknown value \(PolicyYAML.escaped(s, limit: 40, quoted: true)), expected one of rest, sql (or omit it for L4 passthrough)")
          }
        }
      case "tls":
        if let t = choice(v, p, Names.tls) {
          e.tls = t
          if t != .skip { warnings.append(PolicyIssue(path: p, line: v.mark?.line, message: "tls: \(t == .terminate ? "terminate" : "passthrough") is deprecated; TLS is detected automatically")) }
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
            rule.allow = .with { $0.method = m.method; $0.path = m.path; $0.command = m.command; $0.query = m.query }
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
          e.denyRules.append(.with { $0.method = m.method; $0.path = m.path; $0.command = m.command; $0.query = m.query })
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
            var sawGlob = false, sawAny = false
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
