import Foundation
import OpenShellAPI
import Yams

#if canImport(Glibc)
  import Glibc
#endif

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
      // Read through a file handle, not `Data(contentsOf:)`: that fails on character devices and pipes
      // (`--policy /dev/stdin`, a shell's `<(…)`), where there is no size to read up to.
      guard let handle = FileHandle(forReadingAtPath: path) else { throw CocoaError(.fileReadUnknown) }
      defer { try? handle.close() }
      data = try handle.readToEnd() ?? Data()
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
}
