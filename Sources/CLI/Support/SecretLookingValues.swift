import Foundation

/// Warns when a `sandbox create --env NAME=VALUE` looks like a credential. The gateway seals such values
/// (never plaintext in its log) but a sandbox's own environment is readable by everything in the sandbox
/// and lands in shell history; a provider (`openshell provider create`) keeps the value out of the sandbox
/// entirely (the proxy substitutes it on the wire). Heuristic, never a refusal: a name with a credential
/// word (KEY, TOKEN, SECRET, PASSWORD, PASSWD, CREDENTIAL, AUTH, PRIVATE) and a non-empty value, or a value
/// with a well-known token prefix (`sk-`, `ghp_`, `github_pat_`, `xox`, `AKIA`, `glpat-`, `hf_`).
enum SecretLookingValues {
  static let nameWords = ["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "PRIVATE"]
  static let valuePrefixes = ["sk-", "ghp_", "gho_", "github_pat_", "xoxb-", "xoxp-", "AKIA", "glpat-", "hf_"]

  /// The names (sorted) whose values look like credentials.
  static func names(_ env: [String: String]) -> [String] {
    env.filter { name, value in
      guard !value.isEmpty else { return false }
      let upper = name.uppercased()
      return nameWords.contains { upper.contains($0) } || valuePrefixes.contains { value.hasPrefix($0) }
    }.keys.sorted()
  }

  /// One warning line (stderr) naming the variables, never their values; nothing when none looks secret.
  static func warn(_ env: [String: String]) {
    let found = names(env)
    guard !found.isEmpty else { return }
    let list = found.joined(separator: ", ")
    FileHandle.standardError.write(
      Data(
        "warning: --env \(list) looks like a credential: the agent in the sandbox can read it; use a provider instead (openshell provider create --type … --credential NAME=…), which keeps the value outside the sandbox\n"
          .utf8))
  }
}
