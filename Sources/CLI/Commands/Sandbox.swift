import ArgumentParser
import Foundation
import GRPCCore
import OpenShellAPI

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell sandbox …`: create, list, get, delete, exec, stop, start.
struct SandboxCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "sandbox",
    abstract: "Create and manage sandboxes.",
    subcommands: [
      SandboxCreate.self, SandboxList.self, SandboxGet.self, SandboxDelete.self, SandboxExec.self,
      SandboxStop.self, SandboxStart.self, SandboxLogs.self, SandboxConnect.self, SandboxSSHConfig.self, SandboxUpload.self, SandboxDownload.self,
    ],
    aliases: ["sb"])
}

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
        var code: Int32
        if noKeep {
          // An interrupted --no-keep run still deletes its sandbox: SIGINT/SIGTERM cancel the exec (the
          // gateway then kills the command), the deletion below runs, and the exit code is 128 + signal.
          let interrupted = SignalFlag()
          let execTask = Task { try await SandboxCLI.exec(c, name: n, workspace: workspace, command: command, workdir: nil, timeout: 0, stdin: stdin) }
          let sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
              interrupted.set(sig)
              execTask.cancel()
            }
            source.resume()
            return source
          }
          let result = await execTask.result
          for source in sources { source.cancel() }
          if let sig = interrupted.value {
            code = 128 + sig
            printErr("Interrupted; deleting sandbox \(n)")
          } else {
            code = try result.get()
          }
        } else {
          code = try await SandboxCLI.exec(c, name: n, workspace: workspace, command: command, workdir: nil, timeout: 0, stdin: stdin)
        }
        if noKeep {
          let d = try await c.deleteSandbox(
            .with {
              $0.name = n; $0.workspaceScope = SandboxCLI.scope(workspace)
            }, options: SandboxCLI.options())
          try await SandboxCLI.waitDeleted(c, name: n, id: d.sandboxID, workspace: workspace, timeout: 60)
          printErr("Deleted sandbox \(n)")
        }
        return code
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

struct SandboxList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "list", abstract: "List sandboxes.", aliases: ["ls"])
  @OptionGroup var global: GatewayOptions
  @OptionGroup var out: OutputOptions
  @Option(help: "Workspace.") var workspace = "default"
  @Option(help: "Label selector, e.g. team=a.") var selector: String?
  @Flag(help: "Print only names.") var names = false
  @Flag(help: "Print only ids.") var ids = false

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let all = try await GatewayClient.withClient(r.target) { c in
        var items: [Openshell_V1_Sandbox] = []
        var token = ""
        repeat {
          let page = try await c.listSandboxes(
            .with {
              $0.pageSize = 1000
              $0.pageToken = token
              $0.labelSelector = selector ?? ""
              $0.workspaceScope = SandboxCLI.scope(workspace)
            }, options: SandboxCLI.options())
          items += page.sandboxes
          token = page.nextPageToken
        } while !token.isEmpty
        return items
      }
      if names || ids {
        for s in all { print(names ? s.metadata.name : s.metadata.id) }
        return
      }
      if out.output != .table {
        let rows: [[String: Any]] = all.map {
          [
            "name": $0.metadata.name, "id": $0.metadata.id, "workspace": $0.metadata.workspace, "phase": SandboxCLI.phaseName($0.status.phase),
            "created": iso8601($0.metadata.createdTime.date), "labels": $0.metadata.labels,
          ]
        }
        print(out.output == .json ? try jsonString(rows) : try Record(pairs: [("sandboxes", rows)]).render(.yaml))
        return
      }
      guard !all.isEmpty else {
        print("No sandboxes found.")
        return
      }
      print(
        renderTable(
          header: ["NAME", "WORKSPACE", "CREATED", "PHASE"],
          rows: all.map {
            [$0.metadata.name, $0.metadata.workspace, utcDateTime($0.metadata.createdTime.date), SandboxCLI.colored($0.status.phase)]
          }))
    }
  }
}

struct SandboxGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "get", abstract: "Show one sandbox.")
  @OptionGroup var global: GatewayOptions
  @OptionGroup var out: OutputOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Workspace.") var workspace = "default"
  @Option(help: "Show the sandbox as it was at this point: a seq, an RFC 3339 time or a duration ago (5m); rebuilt from the gateway's log.")
  var at: String?

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let n = try SandboxCLI.name(name, gateway: r.name)
      if let at {
        let (seq, view) = try await PointInTime.sandbox(r.target, name: n, workspace: workspace, at: at)
        print(try PointInTime.sandboxRecord(seq, view).render(out.output, title: "Sandbox (as of seq \(seq)):"))
        return
      }
      let s = try await GatewayClient.withClient(r.target) { c in
        try await c.getSandbox(
          .with {
            $0.name = n; $0.workspaceScope = SandboxCLI.scope(workspace)
          }, options: SandboxCLI.options()
        ).sandbox
      }
      let ready = s.status.conditions.first { $0.type == "Ready" }
      // What the local driver recorded at the last start: user, Landlock ABI and mode, seccomp.
      let confinement = s.status.conditions.first { $0.type == "Confinement" }
      let record = Record(pairs: [
        ("Id", s.metadata.id), ("Name", s.metadata.name), ("Workspace", s.metadata.workspace),
        ("Phase", SandboxCLI.phaseName(s.status.phase)), ("Created", iso8601(s.metadata.createdTime.date)),
        ("Labels", s.metadata.labels.isEmpty ? nil : s.metadata.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")),
        ("Reason", ready.map { $0.reason }), ("Message", ready?.message.nilIfEmpty),
        ("Exit code", s.status.hasExitCode ? String(s.status.exitCode) : nil),
        ("Policy version", s.status.currentPolicyVersion > 0 ? Int(s.status.currentPolicyVersion) : nil),
        ("Confinement", confinement.map { c in c.status == "True" ? c.message : "\(c.reason): \(c.message)" }),
        (
          "Limits",
          SandboxCLI.limits(s.spec).map { l in
            out.output == .table ? l.map { "\($0.key) \($0.value)" }.joined(separator: ", ") as Any : Dictionary(uniqueKeysWithValues: l) as Any
          }
        ),
      ])
      print(try record.render(out.output, title: "Sandbox:"))
    }
  }
}

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

struct SandboxStop: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop a sandbox (its workspace is kept).")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let n = try SandboxCLI.name(name, gateway: r.name)
      try await GatewayClient.withClient(r.target) { c in
        _ = try await c.stopSandbox(
          .with {
            $0.name = n; $0.workspaceScope = SandboxCLI.scope(workspace)
          }, options: SandboxCLI.options())
        // Success is printed only once the gateway reports STOPPED; after 30 s the phase it is in is the error.
        var phase = Openshell_V1_SandboxPhase.unspecified
        for _ in 0..<300 {
          phase = try await c.getSandbox(
            .with {
              $0.name = n; $0.workspaceScope = SandboxCLI.scope(workspace)
            }, options: SandboxCLI.options()
          ).sandbox.status.phase
          if phase == .stopped { break }
          try await Task.sleep(for: .milliseconds(100))
        }
        guard phase == .stopped else {
          throw CLIError("sandbox \(n) did not stop within 30s (phase \(SandboxCLI.phaseName(phase))); check it with: openshell sandbox get \(n)")
        }
      }
      print("\(Style.green("✓")) Stopped sandbox \(n)")
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

/// The first signal received, set from a signal source's handler.
final class SignalFlag: @unchecked Sendable {
  private let lock = NSLock()
  private var signal: Int32?
  func set(_ s: Int32) { lock.lock(); if signal == nil { signal = s }; lock.unlock() }
  var value: Int32? { lock.lock(); defer { lock.unlock() }; return signal }
}
