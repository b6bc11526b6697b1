// Commands that run CMD in a sandbox: `openshell sandbox create` (starting a local gateway when none is
// configured; --no-keep deletes the sandbox afterwards, even when interrupted) and `openshell sandbox exec`.

import ArgumentParser
import Foundation
import GRPCCore
import OpenShellAPI

#if canImport(Glibc)
  import Glibc
#endif

struct SandboxCreate: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "create",
    abstract: "Create a sandbox, wait until it is ready, and run CMD in it (exit code = CMD's).",
    discussion: "Starts a local gateway named 'openshell' first when none is configured (unless --no-bootstrap).")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: a generated one).") var name: String?
  @Option(name: .customLong("name"), help: "Sandbox name, as OpenShell's CLI takes it (the same as NAME).") var nameFlag: String?
  @Option(help: "Workspace.") var workspace = "default"
  @Option(name: .customLong("label"), help: "Label K=V (repeatable).") var labels: [String] = []
  @Option(name: .customLong("env"), help: "Environment variable K=V for the sandbox (repeatable).") var env: [String] = []
  @Flag(help: "Delete the sandbox when CMD exits.") var noKeep = false
  @Flag(help: "Do not start a local gateway when none is configured.") var noBootstrap = false
  @Option(help: "Policy YAML file (env OPENSHELL_SANDBOX_POLICY).") var policy: String?
  @Option(name: .customLong("provider"), help: "Attach a provider; its credentials are delivered to the sandbox (repeatable).") var providers: [String] = []
  @Option(help: "CPU limit, e.g. 2, 0.5 or 500m (cgroups; the gateway refuses it where it cannot enforce it).") var cpu: String?
  @Option(help: "Memory limit, e.g. 512Mi or 2Gi (cgroups; the gateway refuses it where it cannot enforce it).") var memory: String?
  @Option(help: "Once the sandbox is ready, forward [ADDR:]PORT on this machine to PORT in it, in the background (openshell forward).")
  var forward: String?
  @Argument(parsing: .postTerminator, help: "Command to run in the sandbox.") var command: [String] = []

  func run() async throws {
    var code: Int32 = 0
    try await cliRun {
      // Arguments are checked before a gateway is contacted (or started).
      let labelMap = try keyValues(labels, flag: "--label")
      let envMap = try environmentVariables(env, flag: "--env")
      SecretLookingValues.warn(envMap)
      let policySpec = try PolicyCLI.creationPolicy(policy)
      if let nameFlag, let name = self.name, nameFlag != name {
        throw CLIError("the sandbox name is given twice ('\(name)' and --name '\(nameFlag)'); give it once")
      }
      let name = nameFlag ?? self.name
      if let name, name.isEmpty { throw CLIError("the sandbox name is empty; leave it out to get a generated name") }
      // A --forward port is checked before the sandbox is created (OpenShell: openshell-behavior.md §1C).
      let forwardPort = try forward.map { spec -> (bind: String, port: Int) in
        let (bind, p) = try ForwardStart.parse(spec)
        try ForwardStart.checkAvailable(bind, p)
        return (bind, p)
      }
      let r = try await resolveOrBootstrap(global, bootstrap: !noBootstrap)
      let timeout = Double(ProcessInfo.processInfo.environment["OPENSHELL_PROVISION_TIMEOUT"] ?? "") ?? 300
      let stdin = command.isEmpty ? Data() : try SandboxCLI.pipedStdin()
      code = try await GatewayClient.withClient(r.target) { c in
        let created = try await c.createSandbox(
          .with {
            $0.name = name ?? ""
            $0.labels = labelMap
            $0.spec = .with {
              $0.environment = envMap
              $0.providers = providers
              if let policySpec { $0.policy = policySpec }
              if let cpu { $0.template.resources.fields["cpu"] = .init(stringValue: cpu) }
              if let memory { $0.template.resources.fields["memory"] = .init(stringValue: memory) }
            }
            $0.workspaceScope = SandboxCLI.scope(workspace)
          }, options: SandboxCLI.options()
        ).sandbox
        let n = created.metadata.name
        printErr("Created sandbox: \(Style.bold(n))")
        // Everything after the creation: wait until ready, forward, run CMD (exit code = CMD's).
        let work: @Sendable () async throws -> Int32 = {
          try await SandboxCLI.waitReady(c, name: n, workspace: workspace, timeout: timeout, progress: true)
          if !noKeep { SandboxCLI.remember(n, gateway: r.name) }
          if let forwardPort {
            try SSHTunnel.ensureIdentity()
            let ws = workspace
            let pid = try await ForwardStart.startBackground(
              args: SSHCommandLine.nameModeOptions(r, name: n, workspace: ws) + ["-o", "ExitOnForwardFailure=yes"], alias: SSHTunnel.alias(n, workspace: ws),
              spec: "\(forwardPort.bind):\(forwardPort.port):127.0.0.1:\(forwardPort.port)", gateway: r.name, sandbox: n, workspace: ws,
              bind: forwardPort.bind, port: forwardPort.port)
            printErr("✓ Forwarding \(forwardPort.bind):\(forwardPort.port) to port \(forwardPort.port) in sandbox \(n) in the background (pid \(pid))")
          }
          guard !command.isEmpty else {
            print(n)
            return 0
          }
          return try await SandboxCLI.exec(c, name: n, workspace: workspace, command: command, workdir: nil, timeout: 0, stdin: stdin)
        }
        guard noKeep else { return try await work() }
        // --no-keep deletes the sandbox whatever happens once it exists: a failed or timed-out wait for
        // ready, a failed exec, or SIGINT/SIGTERM at any point after the creation (they cancel the work; the
        // gateway then kills the command) — the exit code is then 128 + signal.
        let interrupted = SignalFlag()
        let task = Task { try await work() }
        let sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
          signal(sig, SIG_IGN)
          let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
          source.setEventHandler {
            interrupted.set(sig)
            task.cancel()
          }
          source.resume()
          return source
        }
        var result = await task.result
        for source in sources { source.cancel() }
        if let sig = interrupted.value {
          result = .success(128 + sig)
          printErr("Interrupted; deleting sandbox \(n)")
        }
        // The error of the work, if any, is reported after the deletion.
        let d = try await c.deleteSandbox(
          .with {
            $0.name = n; $0.workspaceScope = SandboxCLI.scope(workspace)
          }, options: SandboxCLI.options())
        try await SandboxCLI.waitDeleted(c, name: n, id: d.sandboxID, workspace: workspace, timeout: 60)
        printErr("Deleted sandbox \(n)")
        return try result.get()
      }
    }
    if code != 0 { throw ExitCode(code) }
  }
}

/// Resolves the gateway; when none is configured, runs `openshell gateway start` first.
func resolveOrBootstrap(_ global: GatewayOptions, bootstrap: Bool) async throws -> GatewayOptions.Resolved {
  if global.explicitName != nil || global.gatewayEndpoint != nil || ClientRegistry.default.active != nil || !bootstrap {
    return try global.resolve()
  }
  printErr("No gateway configured; starting a local gateway 'openshell'…")
  let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
  let code = try await ChildProcess.run(exe, ["gateway", "start", "--name", "openshell"], stdout: .toStandardError)
  guard code == 0 else { throw CLIError("could not start a local gateway (openshell gateway start exited \(code))") }
  return try global.resolve()
}

struct SandboxExec: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "exec", abstract: "Run a command in a sandbox (stdin is piped through, -t for a terminal; exit code = the command's).")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Working directory in the sandbox (default /sandbox).") var workdir: String?
  @Option(help: "Seconds before the command is killed (0 = none; exit code 124).") var timeout: Int64 = 0
  @Option(help: "Workspace.") var workspace = "default"
  @Flag(name: [.customShort("t"), .long], help: "Run on a terminal in the sandbox (raw keystrokes, window size, ^C to the command).") var tty = false
  @Flag(name: .customLong("no-tty"), help: "No terminal (the default): stdin is read to the end and sent with the command.") var noTTY = false
  @Argument(parsing: .postTerminator, help: "The command.") var command: [String] = []

  func validate() throws {
    if command.isEmpty { throw ValidationError("give the command after --, e.g. openshell sandbox exec NAME -- ls -l") }
    if tty && noTTY { throw ValidationError("--tty and --no-tty exclude each other") }
  }

  func run() async throws {
    var code: Int32 = 0
    try await cliRun {
      let r = try global.resolve()
      let n = try SandboxCLI.name(name, gateway: r.name)
      if tty {
        code = try await GatewayClient.withClient(r.target) { c in
          try await SandboxCLI.execInteractive(c, name: n, workspace: workspace, command: command, workdir: workdir, timeout: timeout, tty: true)
        }
        SandboxCLI.remember(n, gateway: r.name)
        return
      }
      let stdin = try SandboxCLI.pipedStdin()
      code = try await GatewayClient.withClient(r.target) { c in
        try await SandboxCLI.exec(c, name: n, workspace: workspace, command: command, workdir: workdir, timeout: timeout, stdin: stdin)
      }
      SandboxCLI.remember(n, gateway: r.name)
    }
    if code != 0 { throw ExitCode(code) }
  }
}

/// The first signal received, set from a signal source's handler.
final class SignalFlag: @unchecked Sendable {
  private let lock = NSLock()
  private var signal: Int32?
  func set(_ s: Int32) { lock.lock(); if signal == nil { signal = s }; lock.unlock() }
  var value: Int32? { lock.lock(); defer { lock.unlock() }; return signal }
}
