// `openshell sandbox delete|stop|start`: a sandbox's lifecycle after creation.

import ArgumentParser
import Foundation
import GRPCCore
import OpenShellAPI

struct SandboxDelete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete sandboxes.", aliases: ["rm"])
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox names.") var names: [String] = []
  @Flag(help: "Delete every sandbox of the workspace.") var all = false
  @Option(help: "Workspace.") var workspace = "default"

  func validate() throws {
    if all == !names.isEmpty { throw ValidationError("give sandbox names or --all") }
    if names.contains("") { throw ValidationError("a sandbox name is empty") }
  }

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      try await GatewayClient.withClient(r.target) { c in
        var targets = names
        if all {
          targets = try await c.listSandboxes(
            .with {
              $0.pageSize = 1000; $0.workspaceScope = SandboxCLI.scope(workspace)
            }, options: SandboxCLI.options()
          )
          .sandboxes.map(\.metadata.name)
        }
        for n in targets {
          let d = try await c.deleteSandbox(
            .with {
              $0.name = n; $0.allowMissing = true; $0.workspaceScope = SandboxCLI.scope(workspace)
            }, options: SandboxCLI.options())
          if d.outcome == .accepted { try await SandboxCLI.waitDeleted(c, name: n, id: d.sandboxID, workspace: workspace, timeout: 60) }
          if d.outcome == .alreadyAbsent { print("\(Style.yellow("!")) Sandbox \(n) not found") } else { print("\(Style.green("✓")) Deleted sandbox \(n)") }
          SandboxCLI.forget(n, gateway: r.name)
        }
      }
    }
  }
}

struct SandboxStop: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop a sandbox (its workspace is kept).")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let n = try SandboxCLI.name(name, gateway: r.name)
      let againPhase = try await GatewayClient.withClient(r.target) { c -> Openshell_V1_SandboxPhase? in
        _ = try await c.stopSandbox(
          .with {
            $0.name = n; $0.workspaceScope = SandboxCLI.scope(workspace)
          }, options: SandboxCLI.options())
        // Success is printed only once the gateway reports STOPPED; after 30 s the phase it is in is the error.
        // An accepted stop leaves the sandbox STOPPING until it is STOPPED, and only a STOPPED (or failed) sandbox
        // can be started: seen STARTING, PROVISIONING or READY between two polls, it stopped and another request
        // started it again (found by a newcomer: such a stop waited 30 s and then failed).
        let startedAgain: [Openshell_V1_SandboxPhase] = [.starting, .provisioning, .ready]
        var phase = Openshell_V1_SandboxPhase.unspecified
        for _ in 0..<300 {
          phase = try await c.getSandbox(
            .with {
              $0.name = n; $0.workspaceScope = SandboxCLI.scope(workspace)
            }, options: SandboxCLI.options()
          ).sandbox.status.phase
          if phase == .stopped || startedAgain.contains(phase) { break }
          try await Task.sleep(for: .milliseconds(100))
        }
        guard phase != .stopped else { return nil }
        guard startedAgain.contains(phase) else {
          throw CLIError("sandbox \(n) did not stop within 30s (phase \(SandboxCLI.phaseName(phase))); check it with: openshell sandbox get \(n)")
        }
        return phase
      }
      if let againPhase {
        print("\(Style.green("✓")) Stopped sandbox \(n); another request has started it again (phase \(SandboxCLI.phaseName(againPhase)))")
      } else {
        print("\(Style.green("✓")) Stopped sandbox \(n)")
      }
    }
  }
}

struct SandboxStart: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "start", abstract: "Start a stopped sandbox and wait until it is ready.")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let n = try SandboxCLI.name(name, gateway: r.name)
      try await GatewayClient.withClient(r.target) { c in
        _ = try await c.startSandbox(
          .with {
            $0.name = n; $0.workspaceScope = SandboxCLI.scope(workspace)
          }, options: SandboxCLI.options())
        try await SandboxCLI.waitReady(c, name: n, workspace: workspace, timeout: 300, progress: false)
      }
      print("\(Style.green("✓")) Started sandbox \(n)")
    }
  }
}
