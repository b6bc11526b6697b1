import ArgumentParser
import Foundation

/// `openshell`: the OpenShell command line (gateway lifecycle, sandboxes, providers, policies).
///
/// Every failure prints one line `error: …` on stderr and exits non-zero. Global gateway options
/// (`-g NAME`, `--gateway-endpoint URL`) may appear before or after the subcommand.
@main
struct OpenShell: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "openshell",
    abstract: "OpenShell: sandboxes for AI agents, managed by an event-sourced gateway.",
    discussion: "GATEWAY COMMANDS: gateway (gw), status, doctor (dr). ADDITIONAL: completions.",
    version: "0.1.0",
    subcommands: [
      GatewayCommand.self, Status.self, Doctor.self, Completions.self, SandboxCommand.self, Logs.self, ProviderCommand.self, PolicyCommand.self,
      SettingsCommand.self, InferenceCommand.self, ForwardCommand.self, ServiceCommand.self, SshProxy.self, AuditCLI.self,
    ])

  static func main() async {
    let args = hoistGlobalOptions(Array(CommandLine.arguments.dropFirst()))
    do {
      if let problem = SingleValueOptions.problem(args) { throw fail(problem) }
      var command = try parseAsRoot(args)
      do { try checkGatewayNames(command) } catch let e as CLIError { throw fail(e.message, code: e.code) }
      if var asyncCommand = command as? AsyncParsableCommand {
        try await asyncCommand.run()
      } else {
        try command.run()
      }
    } catch {
      exit(withError: error)
    }
  }
}

struct GatewayCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "gateway",
    abstract: "Run and manage gateways.",
    subcommands: [
      GatewayStart.self, GatewayStop.self, GatewayDestroy.self, GatewaySelect.self, GatewayInfo.self,
      GatewayAdd.self, GatewayLogin.self, GatewayServe.self, GatewayBundle.self,
    ],
    aliases: ["gw"])
}

/// Prints one readable line to stderr and exits non-zero.
func fail(_ message: String, code: Int32 = 1) -> ExitCode {
  FileHandle.standardError.write(Data("error: \(message)\n".utf8))
  return ExitCode(code == 0 ? 1 : code)
}
