import ArgumentParser
import Foundation
import GRPCCore
import OpenShellAPI

/// `openshell logs NAME [-n N] [--tail] [--since 5m] [--source S] [--level L]`.
struct Logs: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Print a sandbox's log lines (gateway and sandbox sources).")
  @OptionGroup var options: LogsOptions

  func run() async throws { try await options.execute() }
}

/// `openshell sandbox logs NAME …`: the same command as `openshell logs`, where users of the `sandbox`
/// group look for it.
struct SandboxLogs: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print a sandbox's log lines (same as `openshell logs`).")
  @OptionGroup var options: LogsOptions

  func run() async throws { try await options.execute() }
}

/// The arguments of `openshell logs` and `openshell sandbox logs`, and what they do.
struct LogsOptions: ParsableArguments {
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(name: .short, help: "Number of lines.") var n: UInt32 = 200
  @Flag(help: "Keep following new lines.") var tail = false
  @Option(help: "Only lines newer than this (e.g. 30s, 5m, 2h).") var since: String?
  @Option(help: "Only these sources (gateway, sandbox; repeatable).") var source: [String] = []
  @Option(help: "Minimum level (DEBUG, INFO, WARN, ERROR).") var level: String = ""

  func validate() throws {
    if !level.isEmpty, !["TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR"].contains(level.uppercased()) {
      throw ValidationError("--level must be one of DEBUG, INFO, WARN, ERROR (got '\(level)')")
    }
  }
  @Option(help: "Workspace.") var workspace = "default"

  static func parseDuration(_ s: String) throws -> TimeInterval {
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    guard let u = s.last, let mult = units[u], let v = Double(s.dropLast()) else {
      if let v = Double(s) { return v }
      throw ValidationError("--since expects a duration like 30s, 5m or 2h")
    }
    return v * mult
  }

  static func format(_ l: Openshell_V1_SandboxLogLine) -> String {
    let ts = iso8601(l.eventTime.date)
    return "\(Style.dim(ts)) \(l.level.padding(toLength: 5, withPad: " ", startingAt: 0)) [\(l.source)] \(l.message)"
  }

  func execute() async throws {
    try await cliRun {
      let r = try global.resolve()
      let sandbox = try SandboxCLI.name(name, gateway: r.name)
      let sinceDate = try since.map { Date().addingTimeInterval(-(try Self.parseDuration($0))) }
      try await GatewayClient.withClient(r.target) { c in
        if !tail {
          let resp = try await c.getSandboxLogs(
            .with {
              $0.sandbox = sandbox
              $0.lines = n
              $0.sources = source
              $0.minLevel = level
              $0.workspaceScope = SandboxCLI.scope(workspace)
              if let sinceDate { $0.sinceTime = .init(date: sinceDate) }
            }, options: SandboxCLI.options())
          for l in resp.logs { print(Self.format(l)) }
          return
        }
        var o = CallOptions.defaults
        o.waitForReady = false
        try await c.watchSandbox(
          .with {
            $0.sandbox = sandbox
            $0.followLogs = true
            $0.logTailLines = n
            $0.logSources = source
            $0.logMinLevel = level
            $0.workspaceScope = SandboxCLI.scope(workspace)
            if let sinceDate { $0.sinceTime = .init(date: sinceDate) }
          }, options: o
        ) { response in
          for try await event in response.messages {
            if case .log(let l)? = event.payload {
              print(Self.format(l))
              fflush(nil)
            }
          }
        }
      }
    }
  }
}
