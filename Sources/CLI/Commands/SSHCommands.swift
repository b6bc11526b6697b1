import ArgumentParser
import Foundation
import GRPCCore
import OpenShellAPI
import RelayTransport
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell ssh-proxy` (hidden): the `ProxyCommand` of `ssh` (OpenShell's two modes).
/// - token mode (what `sandbox connect` runs): `--sandbox-id ID` and the token in
///   `$OPENSHELL_SSH_TOKEN` (or `--token`, which `ps` shows to other users);
/// - name mode (what `sandbox ssh-config` writes): `--name NAME [--workspace W]` creates a session.
/// In both, `--host-key-fingerprint` (name mode: the session's) pins the host key (``SSHHostKeyPin``).
struct SshProxy: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "ssh-proxy", abstract: "SSH proxy (used by ProxyCommand).", shouldDisplay: false)
  @OptionGroup var global: GatewayOptions
  @Option(help: "Gateway name (same as -g).") var gatewayName: String?
  @Option(help: "Sandbox id (token mode).") var sandboxId: String?
  @Option(help: "SSH session token (token mode; prefer $OPENSHELL_SSH_TOKEN).") var token: String?
  @Option(help: "Sandbox name (name mode).") var name: String?
  @Option(help: "Workspace.") var workspace = "default"
  @Option(help: "Expected SSH host key fingerprint (SHA256:…).") var hostKeyFingerprint: String?
  @Option(help: "known_hosts file the verified host key is written to.") var knownHosts: String?
  @Option(help: "Host alias of that known_hosts entry.") var hostAlias: String?

  func validate() throws {
    if (sandboxId == nil) == (name == nil) { throw ValidationError("give either --sandbox-id (token mode) or --name (name mode)") }
  }

  func run() async throws {
    // The tunnel's 256 KiB messages reuse freed heap memory instead of faulting in fresh pages.
    MallocTuning.forByteStreams()
    try await cliRun {
      var options = global
      if let gatewayName { options.gateway = gatewayName }
      let r = try options.resolve()
      let sandboxID = sandboxId
      let name = name
      let workspace = workspace
      let givenToken = token ?? ProcessInfo.processInfo.environment[SSHTunnel.tokenVariable]
      let fingerprint = hostKeyFingerprint
      let known = knownHosts ?? SSHTunnel.knownHosts
      let alias = hostAlias
      try await GatewayClient.withClient(r.target) { c in
        if let sandboxID {
          guard let givenToken, !givenToken.isEmpty else { throw CLIError("token mode needs the session token in $\(SSHTunnel.tokenVariable) (or --token)") }
          let pin = fingerprint.map { SSHHostKeyPin(fingerprint: $0, knownHostsFile: known, hostAlias: alias ?? sandboxID) }
          try await SSHTunnel.proxy(c, sandboxID: sandboxID, workspace: workspace, token: givenToken, pin: pin)
        }
        let session = try await SSHTunnel.createSession(c, name: name!, workspace: workspace)
        let pin = SSHHostKeyPin(
          fingerprint: fingerprint ?? session.hostKeyFingerprint, knownHostsFile: known, hostAlias: alias ?? SSHTunnel.alias(name!, workspace: workspace))
        try await SSHTunnel.proxy(c, sandboxID: session.sandboxID, workspace: workspace, token: session.token, pin: pin)
      }
    }
  }
}

/// `openshell sandbox connect [NAME] [-- CMD…]`: the system `ssh` through `ssh-proxy`, host key pinned
/// in a private known_hosts file; exit code = the remote shell's (ssh's own failures: 255).
struct SandboxConnect: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "connect", abstract: "Open an SSH session to a sandbox (exit code = the remote shell's).")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Workspace.") var workspace = "default"
  @Argument(parsing: .postTerminator, help: "A command to run instead of a login shell.") var command: [String] = []

  func run() async throws {
    var code: Int32 = 0
    try await cliRun {
      let r = try global.resolve()
      let n = try SandboxCLI.name(name, gateway: r.name)
      // Without an OpenSSH client: a login shell (or the command) on a terminal through
      // ExecSandboxInteractive, as OpenShell's exec path does; the exit code is the same.
      guard FileManager.default.isExecutableFile(atPath: SSHTunnel.sshClient) else {
        FileHandle.standardError.write(
          Data("openshell: no ssh client at \(SSHTunnel.sshClient); using interactive exec (no port forwarding, scp or sftp)\n".utf8))
        let ws = workspace
        let argv = command.isEmpty ? ["/bin/sh", "-l"] : ["/bin/sh", "-c", command.joined(separator: " ")]
        code = try await GatewayClient.withClient(r.target) { c in
          try await SandboxCLI.execInteractive(c, name: n, workspace: ws, command: argv, workdir: nil, timeout: 0, tty: isatty(0) == 1 || command.isEmpty)
        }
        SandboxCLI.remember(n, gateway: r.name)
        return
      }
      try SSHTunnel.ensureIdentity()
      let ws = workspace
      let session = try await GatewayClient.withClient(r.target) { c in try await SSHTunnel.createSession(c, name: n, workspace: ws) }
      SandboxCLI.remember(n, gateway: r.name)
      let scratch = try PrivateDirectory.make(in: FileManager.default.temporaryDirectory.path, prefix: "openshell-ssh-")
      defer { try? FileManager.default.removeItem(atPath: scratch) }
      let known = scratch + "/known_hosts"
      let alias = SSHTunnel.alias(n, workspace: ws)
      var proxy = [SSHCommandLine.executable(), "ssh-proxy"] + SSHCommandLine.gatewayArguments(r)
      proxy += [
        "--sandbox-id", session.sandboxID, "--workspace", ws, "--host-key-fingerprint", session.hostKeyFingerprint, "--known-hosts", known, "--host-alias",
        alias,
      ]
      var args = SSHTunnel.options(alias: alias, knownHostsFile: known).flatMap { ["-o", "\($0.0)=\($0.1)"] }
      args += ["-o", "ProxyCommand=" + proxy.map(SSHCommandLine.quote).joined(separator: " ")]
      if command.isEmpty, isatty(0) == 1 { args.append("-t") }
      args.append(alias)
      args += command
      var env = ProcessInfo.processInfo.environment
      env[SSHTunnel.tokenVariable] = session.token
      // ^C and friends belong to the remote shell while ssh runs.
      signal(SIGINT, SIG_IGN)
      signal(SIGQUIT, SIG_IGN)
      let p = try Spawner.spawn(SSHTunnel.sshClient, args, environment: env, stdin: .fd(0), stdout: .fd(1), stderr: .fd(2))
      code = await Spawner.wait(p.pid)
    }
    if code != 0 { throw ExitCode(code) }
  }
}

/// `openshell sandbox ssh-config [NAME]`: a `Host` block for `~/.ssh/config` (ssh, scp, sftp, rsync,
/// VS Code Remote) using `ssh-proxy` in name mode; the host key is pinned in
/// `~/.config/openshell/ssh/known_hosts`.
struct SandboxSSHConfig: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "ssh-config", abstract: "Print an SSH config Host block for a sandbox.")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await cliRun {
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
      try SSHTunnel.ensureIdentity()
      let alias = SSHTunnel.alias(n, workspace: ws)
      let proxy = [SSHCommandLine.executable(), "ssh-proxy"] + SSHCommandLine.gatewayArguments(r) + ["--name", n, "--workspace", ws]
      var lines = ["Host \(alias)"]
      for (k, v) in SSHTunnel.options(alias: alias, knownHostsFile: SSHTunnel.knownHosts) {
        lines.append("    \(k) \(v.contains(" ") ? "\"\(v)\"" : v)")
      }
      lines.append("    ProxyCommand " + proxy.map(SSHCommandLine.quote).joined(separator: " "))
      print(lines.joined(separator: "\n"))
    }
  }
}

enum SSHCommandLine {
  /// This executable's absolute path (`/proc/self/exe`).
  static func executable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
  }

  /// How `ssh-proxy` finds the same gateway: `-g NAME` for a registered one, else its endpoint.
  static func gatewayArguments(_ r: GatewayOptions.Resolved) -> [String] {
    r.metadata != nil ? ["-g", r.name] : ["--gateway-endpoint", r.target.endpoint]
  }

  /// `ssh` options for a sandbox in name mode (a session per connection, key pinned in the shared
  /// known_hosts file), non-interactive; the host argument is ``SSHTunnel/alias(_:workspace:)``.
  static func nameModeOptions(_ r: GatewayOptions.Resolved, name: String, workspace: String) -> [String] {
    let alias = SSHTunnel.alias(name, workspace: workspace)
    let proxy = [executable(), "ssh-proxy"] + gatewayArguments(r) + ["--name", name, "--workspace", workspace]
    var args = SSHTunnel.options(alias: alias, knownHostsFile: SSHTunnel.knownHosts).flatMap { ["-o", "\($0.0)=\($0.1)"] }
    args += ["-o", "ProxyCommand=" + proxy.map(quote).joined(separator: " "), "-o", "BatchMode=yes"]
    return args
  }

  /// Single-quotes a word for the shell `ssh` runs ProxyCommand with.
  static func quote(_ s: String) -> String {
    if !s.isEmpty, s.allSatisfy({ $0.isLetter || $0.isNumber || "-_./:=@%+".contains($0) }) { return s }
    return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
  }
}
