import Foundation

/// Lifecycle and doctor commands for a gateway deployed with `gateway start --remote`: each runs the
/// installed `openshell` on the host over SSH (the binary that started it, `ssh.openshell_path`), so
/// the host does what it does for a local gateway (graceful stop, archive instead of delete).
enum RemoteOperations {
  /// `gateway stop`: stops the daemon on the host and this machine's tunnel; the registration stays.
  static func stop(_ meta: GatewayMetadata, timeout: Double) throws {
    guard let s = meta.ssh else { return }
    let ssh = try s.connection()
    try ssh.open()
    defer { ssh.close() }
    print("• Stopping gateway \(meta.name) on \(s.destination)...")
    try RemoteGateway.remote(
      ssh, step: "stop gateway",
      [s.openshell_path, "gateway", "stop", "--name", meta.name, "--timeout", String(Int(timeout))].map(shellQuote).joined(separator: " "),
      echo: true)
    GatewayTunnel.stop(meta.name, local: s.tunnel_local_port)
    print("\(Style.check) Gateway \(meta.name) stopped (on \(s.destination); start it again with: openshell gateway start --name \(meta.name)).")
  }

  /// `gateway destroy`: destroys the gateway on the host (its data dir goes to the host's archive),
  /// then removes the registration and the tunnel. A gateway the host no longer knows is only
  /// unregistered. With `keepRemote` the host is not contacted at all.
  static func destroy(_ meta: GatewayMetadata, keepRemote: Bool, registry: ClientRegistry = .default) throws {
    guard let s = meta.ssh else { return }
    if !keepRemote {
      let ssh: SSHConnection
      do {
        ssh = try s.connection()
        try ssh.open()
      } catch let e as CLIError {
        throw CLIError("\(e.message); the registration is kept (to remove only it: openshell gateway destroy --name \(meta.name) --yes --keep-remote)")
      }
      defer { ssh.close() }
      print("• Destroying gateway \(meta.name) on \(s.destination)...")
      let r = try ssh.run([s.openshell_path, "gateway", "destroy", "--name", meta.name, "--yes"].map(shellQuote).joined(separator: " "))
      for line in r.text.split(separator: "\n") where !line.isEmpty { print("  \(Style.dim("│")) \(line)") }
      if r.code != 0 && !r.err.contains("unknown gateway") {
        if r.code == 255 && !r.err.contains("error:") {
          throw CLIError(SSHConnection.describeFailure(r.err, status: r.code, destination: s.destination))
        }
        let line = r.err.split(separator: "\n").last { $0.hasPrefix("error:") }.map { String($0.dropFirst(6)).trimmingCharacters(in: .whitespaces) }
        throw CLIError("step 'destroy gateway' failed on \(s.destination): \(line ?? "exit \(r.code)"); the registration is kept")
      }
    }
    GatewayTunnel.stop(meta.name, local: s.tunnel_local_port)
    try registry.remove(meta.name)
    print("\(Style.check) Gateway \(meta.name) destroyed\(keepRemote ? " (registration only; the host was not contacted)" : "").")
  }

  /// `doctor logs`: the daemon log on the host (`--tail` follows it until Ctrl-C).
  static func logs(_ meta: GatewayMetadata, lines: Int?, tail: Bool) throws -> Int32 {
    guard let s = meta.ssh else { return 1 }
    var args = [s.openshell_path, "doctor", "logs", "--name", meta.name]
    if let lines { args += ["--lines", String(lines)] }
    if tail { args.append("--tail") }
    return try attached(s, args, tty: false)
  }

  /// `doctor exec`: a command in the gateway's environment on the host; its exit code is returned.
  static func exec(_ meta: GatewayMetadata, command: [String]) throws -> Int32 {
    guard let s = meta.ssh else { return 1 }
    return try attached(s, [s.openshell_path, "doctor", "exec", "--name", meta.name, "--"] + command, tty: stdinIsTerminal && stdoutIsTerminal)
  }

  /// `doctor check`: the host's checks of its gateway (libraries, data dir, port, certificates, log).
  static func check(_ meta: GatewayMetadata, output: OutputFormat) throws -> Int32 {
    guard let s = meta.ssh else { return 1 }
    return try attached(s, [s.openshell_path, "doctor", "check", "--name", meta.name, "-o", output.rawValue], tty: false)
  }

  private static func attached(_ s: RemoteSSH, _ args: [String], tty: Bool) throws -> Int32 {
    let ssh = try s.connection()
    try ssh.open()
    defer { ssh.close() }
    return try ssh.runAttached(args.map(shellQuote).joined(separator: " "), tty: tty)
  }
}
