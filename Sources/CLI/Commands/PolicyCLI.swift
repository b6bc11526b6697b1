import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import PolicyKit

typealias InferenceClient = Openshell_Inference_V1_Inference.Client<HTTP2ClientTransport.Posix>

/// Shared plumbing of `policy`, `settings` and `inference` (and `sandbox create --policy`).
enum PolicyCLI {
  /// Reads and checks a policy file the way the gateway will (structure, unknown keys, safety rules),
  /// reporting every problem with its field path and YAML line. The supervisor's L7 rules are left to
  /// the supervisor (a violation makes the revision `failed`).
  static func load(_ path: String) throws -> Openshell_Sandbox_V1_SandboxPolicy {
    let parsed: ParsedPolicy
    do {
      parsed = try PolicyYAML.parse(contentsOf: path)
    } catch let e as PolicyFileError {
      throw CLIError(e.description)
    } catch let e as PolicyParseError {
      throw CLIError("\(path): \(e.description)")
    }
    for w in parsed.warnings { printErr("warning: \(path): \(w)") }
    let unsafe = parsed.locate(PolicyRules.safetyIssues(parsed.policy))
    if !unsafe.isEmpty {
      throw CLIError("\(path): policy contains unsafe content: " + unsafe.map(\.description).joined(separator: "; "))
    }
    return parsed.policy
  }

  /// The policy of `sandbox create`: `--policy FILE`, else `$OPENSHELL_SANDBOX_POLICY`, else none.
  static func creationPolicy(_ flag: String?) throws -> Openshell_Sandbox_V1_SandboxPolicy? {
    let env = ProcessInfo.processInfo.environment["OPENSHELL_SANDBOX_POLICY"]
    guard let path = flag ?? (env?.isEmpty == false ? env : nil) else { return nil }
    return try load(path)
  }

  static func withClients<R: Sendable>(_ t: Target, _ body: @Sendable (ShellClient, InferenceClient) async throws -> R) async throws -> R {
    try await GatewayClient.withConnection(t) { client in
      try await body(Openshell_V1_OpenShell.Client(wrapping: client), Openshell_Inference_V1_Inference.Client(wrapping: client))
    }
  }

  /// Runs a command body; RPC errors become `error: <message>` (see `describe(_:)`).
  static func run(_ body: () async throws -> Void) async throws {
    try await cliRun(body)
  }

  static func confirm(_ question: String, yes: Bool) throws {
    if yes { return }
    guard stdinIsTerminal else { throw CLIError("\(question) Refusing without a terminal; pass --yes to confirm") }
    FileHandle.standardError.write(Data("\(question) [y/N] ".utf8))
    let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
    guard answer == "y" || answer == "yes" else { throw CLIError("aborted") }
  }

  static func statusName(_ s: Openshell_V1_PolicyStatus) -> String {
    switch s {
    case .pending: "pending"
    case .loaded: "loaded"
    case .failed: "failed"
    case .superseded: "superseded"
    default: "unspecified"
    }
  }
}
