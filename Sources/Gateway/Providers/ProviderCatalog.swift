import Foundation

/// Provider types and the environment variables their credentials come from
/// (openshell-behavior.md §1D; OpenShell v0.0.30).
public enum ProviderCatalog {
  /// Known provider types, in OpenShell's order.
  public static let types = [
    "claude", "opencode", "codex", "copilot", "generic", "openai", "anthropic", "nvidia", "gitlab", "github", "outlook",
  ]

  /// Lookup aliases (`gh` → github, `glab` → gitlab).
  public static let aliases = ["gh": "github", "glab": "gitlab"]

  /// Environment variables `provider create --from-existing` reads, per type (first match first).
  public static let discoveryVariables: [String: [String]] = [
    "claude": ["ANTHROPIC_API_KEY", "CLAUDE_API_KEY"],
    "anthropic": ["ANTHROPIC_API_KEY"],
    "codex": ["OPENAI_API_KEY"],
    "openai": ["OPENAI_API_KEY"],
    "opencode": ["OPENCODE_API_KEY", "OPENROUTER_API_KEY", "OPENAI_API_KEY"],
    "copilot": ["COPILOT_GITHUB_TOKEN", "GH_TOKEN", "GITHUB_TOKEN"],
    "github": ["GITHUB_TOKEN", "GH_TOKEN"],
    "gitlab": ["GITLAB_TOKEN", "GLAB_TOKEN", "CI_JOB_TOKEN"],
    "nvidia": ["NVIDIA_API_KEY"],
    "outlook": [],
    "generic": [],
  ]

  /// The canonical type for a name or alias (case-insensitive); nil when unknown.
  public static func normalize(_ type: String) -> String? {
    let t = type.lowercased()
    if let a = aliases[t] { return a }
    return types.contains(t) ? t : nil
  }

  /// Credentials `--from-existing` finds for `type` in `environment`: every listed variable that is set
  /// and non-empty, keyed by the variable name.
  public static func discover(type: String, environment: [String: String]) -> [String: String] {
    var found: [String: String] = [:]
    for name in discoveryVariables[type] ?? [] {
      if let v = environment[name], !v.isEmpty { found[name] = v }
    }
    return found
  }

  /// Environment-variable names: `[A-Za-z_][A-Za-z0-9_]*`. Credential keys must be such names (they are
  /// delivered to sandboxes as environment variables).
  public static func isEnvironmentName(_ s: String) -> Bool {
    guard let first = s.utf8.first, !s.isEmpty else { return false }
    func letter(_ b: UInt8) -> Bool { (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x5f }
    guard letter(first) else { return false }
    return s.utf8.allSatisfy { letter($0) || ($0 >= 0x30 && $0 <= 0x39) }
  }

  /// What every response shows instead of a credential value.
  public static let redacted = "REDACTED"
}
