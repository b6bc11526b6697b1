import ArgumentParser
import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell forward start|stop|list`: a local TCP port forwarded to the same port on the sandbox's
/// loopback, as OpenShell does it — `ssh -N -L` through `ssh-proxy` (name mode, host key pinned), so the
/// connection inside the sandbox is made by its confined sshd in the sandbox's network namespace.
/// Background forwards are recorded in `~/.config/openshell/forwards/<port>.json`.
struct ForwardCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "forward", abstract: "Forward local ports to sandboxes.", subcommands: [ForwardStart.self, ForwardStop.self, ForwardList.self])
}

/// One background forward.
struct ForwardRecord: Codable {
  var pid: Int32
  var sandbox: String
  var workspace: String
  var gateway: String
  var bind: String
  var port: Int

  static var directory: String { ClientRegistry.default.root.appendingPathComponent("forwards").path }
  static func path(_ port: Int) -> String { directory + "/\(port).json" }

  static func all() -> [ForwardRecord] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    return names.sorted().compactMap { n in
      FileManager.default.contents(atPath: directory + "/" + n).flatMap { try? JSONDecoder().decode(ForwardRecord.self, from: $0) }
    }
  }

  /// Whether `pid` is still this forward's ssh (a pid may have been reused).
  var alive: Bool {
    guard let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
    let words = cmd.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    return words.first?.hasSuffix("ssh") == true && words.contains("\(bind):\(port):127.0.0.1:\(port)")
  }
}

struct ForwardStart: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "start", abstract: "Forward [ADDR:]PORT on this machine to PORT on the sandbox's loopback.")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "[ADDR:]PORT (ADDR defaults to 127.0.0.1).") var port: String
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Workspace.") var workspace = "default"
  @Flag(name: [.short, .customLong("background")], help: "Run in the background and return once the port listens.") var background = false

  /// Parses `[ADDR:]PORT`.
  static func parse(_ spec: String) throws -> (String, Int) {
    var bind = "127.0.0.1"
    var portText = spec
    if let colon = spec.lastIndex(of: ":") {
      bind = String(spec[..<colon])
      portText = String(spec[spec.index(after: colon)...])
    }
    guard let p = Int(portText), (1...65535).contains(p) else { throw CLIError("invalid port '\(portText)': give [ADDR:]PORT with PORT 1-65535") }
    guard !bind.isEmpty, !bind.contains(" ") else { throw CLIError("invalid bind address '\(bind)'") }
    return (bind, p)
  }

  /// Refuses a port that one of our forwards already serves or that something else listens on: one
  /// readable line before ssh starts (OpenShell §1G). Also used by `sandbox create --forward`.
  static func checkAvailable(_ bind: String, _ p: Int) throws {
    if let existing = ForwardRecord.all().first(where: { $0.port == p && $0.alive }) {
      throw CLIError("port \(p) is already forwarded to sandbox \(existing.sandbox) (openshell forward stop \(p))")
    }
    try ForwardPort.checkFree(bind, p)
  }

  /// Starts `ssh -f -N -L spec alias` (`args`: the name-mode options and `ExitOnForwardFailure=yes`) and
  /// records it; returns the pid of the ssh left serving the forward. Also used by `sandbox create --forward`.
  /// - Throws: `CLIError` with one line when the listener could not be set up or ssh did not start in 20 s.
  static func startBackground(
    args sshOptions: [String], alias: String, spec: String, gateway: String, sandbox n: String, workspace ws: String, bind: String, port p: Int
  ) async throws -> pid_t {
    var args = sshOptions
    // `-f`: ssh forks into the background only once its listener is bound (ExitOnForwardFailure), so
    // its exit status says whether the forward is up; the process left running serves it.
    args += ["-f", "-N", "-L", spec, alias]
    try FileManager.default.createDirectory(atPath: ForwardRecord.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let log = ForwardRecord.directory + "/\(p).log"
    unlink(log)
    let child = try Spawner.spawn(
      "/usr/bin/ssh", args, environment: ProcessInfo.processInfo.environment, stdin: .null, stdout: .null, stderr: .appendFile(log), newSession: true)
    let deadline = ContinuousClock.now + .seconds(20)
    var status: Int32? = nil
    while status == nil {
      status = Spawner.poll(child.pid)
      guard status == nil else { break }
      guard ContinuousClock.now < deadline else {
        kill(child.pid, SIGTERM)
        _ = await Spawner.wait(child.pid)
        unlink(log)
        throw CLIError("the forward of \(bind):\(p) did not start within 20 s")
      }
      try await Task.sleep(for: .milliseconds(50))
    }
    guard status == 0, let pid = ForwardPort.sshServing(spec) else {
      let stderr = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
      unlink(log)
      throw CLIError(ForwardPort.failure(bind, p, sshStderr: stderr, status: status ?? -1))
    }
    let record = ForwardRecord(pid: pid, sandbox: n, workspace: ws, gateway: gateway, bind: bind, port: p)
    try JSONEncoder().encode(record).write(to: URL(fileURLWithPath: ForwardRecord.path(p)))
    return pid
  }

  func run() async throws {
    var code: Int32 = 0
    try await cliRun {
      let (bind, p) = try Self.parse(port)
      let r = try global.resolve()
      let n = try SandboxCLI.name(name, gateway: r.name)
      let ws = workspace
      _ = try await GatewayClient.withClient(r.target) { c in
        try await c.getSandbox(
          .with {
            $0.name = n; $0.workspaceScope = SandboxCLI.scope(ws)
          }, options: SandboxCLI.options()
        ).sandbox
      }
      try Self.checkAvailable(bind, p)
      try SSHTunnel.ensureIdentity()
      let alias = SSHTunnel.alias(n, workspace: ws)
      let spec = "\(bind):\(p):127.0.0.1:\(p)"
      var args = SSHCommandLine.nameModeOptions(r, name: n, workspace: ws) + ["-o", "ExitOnForwardFailure=yes"]
      SandboxCLI.remember(n, gateway: r.name)
      if !background {
        args += ["-N", "-L", spec, alias]
        print("Forwarding \(bind):\(p) to port \(p) in sandbox \(n) (Ctrl-C to stop)")
        signal(SIGINT, SIG_IGN)
        // ssh's stderr is relayed as it comes, except its lines about a listener it could not set up (a port
        // taken in between): those become one line (ForwardPort.failure).
        let child = try Spawner.spawn("/usr/bin/ssh", args, environment: ProcessInfo.processInfo.environment, stdin: .null, stdout: .fd(1), stderr: .pipe)
        var held = ""
        for await line in ForwardPort.lines(child.stderr!) {
          if ForwardPort.isListenerFailure(line) { held += line + "\n" } else { FileHandle.standardError.write(Data((line + "\n").utf8)) }
        }
        code = await Spawner.wait(child.pid)
        if code != 0, !held.isEmpty { throw CLIError(ForwardPort.failure(bind, p, sshStderr: held, status: code)) }
        return
      }
      let pid = try await Self.startBackground(args: args, alias: alias, spec: spec, gateway: r.name, sandbox: n, workspace: ws, bind: bind, port: p)
      print("✓ Forwarding \(bind):\(p) to port \(p) in sandbox \(n) in the background (pid \(pid)); stop it with: openshell forward stop \(p)")
    }
    if code != 0 { throw ExitCode(code) }
  }
}

struct ForwardStop: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop a background forward.")
  @Argument(help: "The forwarded port.") var port: Int
  @Argument(help: "Sandbox name (optional check).") var name: String?

  func run() async throws {
    try await cliRun {
      guard let record = ForwardRecord.all().first(where: { $0.port == port }) else {
        throw CLIError("no background forward of port \(port) (openshell forward list)")
      }
      if let name, name != record.sandbox { throw CLIError("port \(port) is forwarded to sandbox \(record.sandbox), not \(name)") }
      if record.alive { kill(record.pid, SIGTERM) }
      unlink(ForwardRecord.path(port))
      unlink(ForwardRecord.directory + "/\(port).log")
      print("✓ Stopped forwarding port \(port) to sandbox \(record.sandbox)")
    }
  }
}

struct ForwardList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "list", abstract: "List background forwards.")

  func run() async throws {
    let records = ForwardRecord.all()
    guard !records.isEmpty else {
      print("No active forwards.")
      return
    }
    let rows = records.map { [$0.sandbox, "\($0.bind):\($0.port)", String($0.pid), $0.alive ? "running" : "dead"] }
    let header = ["SANDBOX", "BIND", "PID", "STATUS"]
    let widths = header.indices.map { i in ([header[i]] + rows.map { $0[i] }).map(\.count).max() ?? 0 }
    for row in [header] + rows {
      let line = row.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  ")
      print(line.replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression))
    }
  }
}
