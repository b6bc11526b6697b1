import ArgumentParser
import Foundation

/// `openshell`: the OpenShell command line (gateway lifecycle, sandboxes, providers, policies).
@main
struct OpenShell: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "openshell",
    abstract: "OpenShell: sandboxes for AI agents, managed by an event-sourced gateway.",
    version: "0.1.0",
    subcommands: [GatewayCommand.self])
}

struct GatewayCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "gateway",
    abstract: "Run and manage gateways.",
    subcommands: [GatewayServe.self],
    aliases: ["gw"])
}

/// Prints one readable line to stderr and exits non-zero.
func fail(_ message: String, code: Int32 = 1) -> ExitCode {
  FileHandle.standardError.write(Data("error: \(message)\n".utf8))
  return ExitCode(code)
}
