import Foundation
import OpenShellAPI

/// Rendering: a policy as YAML in the same schema (round-trips through `PolicyYAML.parse`).
extension PolicyYAML {

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
    let plainSafe =
      !s.isEmpty
      && s.unicodeScalars.allSatisfy { c in
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
