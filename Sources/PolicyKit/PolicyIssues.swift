import Foundation
import OpenShellAPI
import Yams

/// One problem found in a sandbox policy: the field path (`network_policies.api.endpoints[0].port`),
/// the YAML line when the policy came from YAML, and what is wrong.
public struct PolicyIssue: Error, Sendable, Equatable, CustomStringConvertible {
  /// Dotted field path, e.g. `network_policies.api.endpoints[0].port`; empty for a whole-policy problem.
  public var path: String
  /// 1-based YAML line of the field; nil when unknown (policy not from YAML, or path not located).
  public var line: Int?
  /// What is wrong, in OpenShell's wording where it has one (openshell-behavior.md §7).
  public var message: String

  /// An issue at `path` (and `line`, when known).
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
  /// The path as given on the command line.
  public var path: String
  /// Why it cannot be read (`strerror`), or nil when it was read but is not UTF-8 text.
  public var reason: String?

  /// `reason` is the `strerror` text, or nil for a file that is not UTF-8.
  public init(path: String, reason: String?) {
    self.path = path
    self.reason = reason
  }

  /// `cannot read policy file P: REASON` or `policy file P is not UTF-8 text`.
  public var description: String {
    if let reason { return "cannot read policy file \(path): \(reason)" }
    return "policy file \(path) is not UTF-8 text"
  }
}

/// Parsing failed: every structural problem found (unknown keys, wrong types, bad enum values).
public struct PolicyParseError: Error, Sendable, CustomStringConvertible {
  /// Every problem found (at least one).
  public var issues: [PolicyIssue]
  /// An error carrying `issues`.
  public init(_ issues: [PolicyIssue]) { self.issues = issues }
  /// `failed to parse sandbox policy YAML: ` followed by the issues joined with `; `.
  public var description: String {
    "failed to parse sandbox policy YAML: " + issues.map(\.description).joined(separator: "; ")
  }
}

/// A parsed policy plus where each field path was found in the YAML (for line numbers in later checks).
public struct ParsedPolicy: Sendable {
  /// The parsed policy, normalized (``PolicyRules/normalized(_:)``) but not yet checked against the rules.
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
    issues.map {
      var i = $0; if i.line == nil { i.line = line(of: i.path) }; return i
    }
  }
}
