import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// One SSH destination reached with the system OpenSSH client (`ssh`), as OpenShell's remote
/// deployment does (openshell-behavior.md §1A "Remote gateway"): the user's `~/.ssh/config`,
/// `ssh-agent` and `known_hosts` apply unchanged; nothing here speaks SSH itself.
///
/// - `--ssh-key PATH` becomes `-i PATH -o IdentitiesOnly=yes`; `$OPENSHELL_SSH_CONFIG` (a file) becomes
///   `-F FILE` (ssh then reads that file instead of `~/.ssh/config`).
/// - ``open()`` starts one master connection (`ControlMaster`, socket in a private `mkdtemp` directory);
///   every later ``run(_:stdin:)`` and upload goes over it, so authentication happens once and the
///   binaries travel over the same connection as the commands.
/// - Host keys are never accepted blindly: an unknown host key fails with the command that verifies it.
final class SSHConnection {
  let destination: String
  let identityFile: String?
  let configFile: String?
  private var controlDirectory: String?
  private var masterPID: pid_t?

  /// - Throws: `CLIError` for a destination ssh would read as an option, or a key file that is missing.
  init(destination: String, identityFile: String?, configFile: String?) throws {
    try Self.validate(destination: destination)
    if let k = identityFile, !FileManager.default.isReadableFile(atPath: k) {
      throw CLIError("--ssh-key \(k): no such readable file; pass the private key whose public half is in the host's ~/.ssh/authorized_keys")
    }
    if let f = configFile, !FileManager.default.isReadableFile(atPath: f) {
      throw CLIError("OPENSHELL_SSH_CONFIG=\(f): no such readable file")
    }
    self.destination = destination
    self.identityFile = identityFile
    self.configFile = configFile
  }

  deinit { close() }

  /// `[user@]host` or `ssh://[user@]host[:port]`: no leading `-`, no whitespace or control characters.
  static func validate(destination d: String) throws {
    guard !d.isEmpty, !d.hasPrefix("-"), !d.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 32 || $0 == 127 } == true || $0 == "'" }) else {
      throw CLIError("invalid --remote '\(d)': expected user@host (an ssh destination or ~/.ssh/config alias)")
    }
  }

  /// The host part of the destination as written (the SSH alias): `u@alias` → `alias`.
  var alias: String { Self.alias(of: destination) }

  static func alias(of d: String) -> String {
    var s = d
    if s.hasPrefix("ssh://") { s.removeFirst(6) }
    if let at = s.lastIndex(of: "@") { s = String(s[s.index(after: at)...]) }
    if s.hasPrefix("["), let close = s.firstIndex(of: "]") { return String(s[s.index(after: s.startIndex)..<close]) }
    if d.hasPrefix("ssh://"), let colon = s.lastIndex(of: ":") { s = String(s[..<colon]) }
    return s
  }

  /// Options every ssh invocation gets (before the destination).
  var commonOptions: [String] {
    var o: [String] = []
    if let configFile { o += ["-F", configFile] }
    if let identityFile { o += ["-i", identityFile, "-o", "IdentitiesOnly=yes"] }
    o += ["-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
    return o
  }

  // MARK: resolution

  /// What `ssh -G` says about the destination (after `~/.ssh/config`): the host name it dials, user, port.
  struct Resolved: Equatable {
    var hostname: String
    var user: String
    var port: Int
  }

  /// Runs `ssh -G` (no connection is made).
  /// - Throws: `CLIError` naming the step when ssh is missing or rejects the configuration.
  func resolve() throws -> Resolved {
    let r = try Self.ssh(commonOptions + ["-G", destination])
    guard r.code == 0 else {
      throw CLIError("step 'resolve host' failed: ssh -G \(destination): \(Self.lastLine(r.err) ?? "exit \(r.code)")")
    }
    var values: [String: String] = [:]
    for line in String(decoding: r.out, as: UTF8.self).split(separator: "\n") {
      let parts = line.split(separator: " ", maxSplits: 1)
      if parts.count == 2, values[String(parts[0])] == nil { values[String(parts[0])] = String(parts[1]) }
    }
    guard let host = values["hostname"], !host.isEmpty else {
      throw CLIError("step 'resolve host' failed: ssh -G \(destination) printed no hostname")
    }
    return Resolved(hostname: host, user: values["user"] ?? "", port: Int(values["port"] ?? "") ?? 22)
  }

  // MARK: the master connection

  /// Connects and authenticates once (a master connection that later commands share).
  /// Interactive prompts (key passphrase) are allowed only when stdin is a terminal.
  /// - Throws: `CLIError` naming the failed step (`ssh connection`, `ssh authentication`, host key).
  func open() throws {
    guard masterPID == nil else { return }
    var template = Array("/tmp/openshell-ssh-XXXXXX".utf8CString)
    guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
      throw CLIError("cannot create a private directory for the ssh control socket: \(errnoString())")
    }
    controlDirectory = dir
    let socket = dir + "/ctl"
    let errFile = dir + "/master.err"
    let interactive = stdinIsTerminal
    let args =
      commonOptions + [
        "-M", "-S", socket, "-N", "-o", "ControlPersist=no", "-o", "BatchMode=\(interactive ? "no" : "yes")", destination,
      ]
    let child: SpawnedProcess
    do {
      child = try Spawner.spawn(
        "ssh", args, environment: ProcessInfo.processInfo.environment,
        stdin: interactive ? .fd(STDIN_FILENO) : .null, stdout: .null, stderr: .appendFile(errFile), searchPath: true)
    } catch {
      throw CLIError("ssh (the OpenSSH client) cannot be started: \(error); install it: apt-get install openssh-client")
    }
    masterPID = child.pid
    let deadline = Date().addingTimeInterval(interactive ? 300 : 60)
    while true {
      if let status = Spawner.poll(child.pid) {
        masterPID = nil
        let err = (try? String(contentsOfFile: errFile, encoding: .utf8)) ?? ""
        throw CLIError(Self.describeFailure(err, status: status, destination: destination))
      }
      if FileManager.default.fileExists(atPath: socket) { return }
      guard Date() < deadline else {
        close()
        throw CLIError("step 'ssh connection' failed: no SSH session with \(destination) after \(interactive ? 300 : 60) s")
      }
      usleep(50_000)
    }
  }

  /// Ends the master connection (if any) and removes its private directory.
  func close() {
    if let pid = masterPID, let dir = controlDirectory {
      _ = try? Self.ssh(commonOptions + ["-S", dir + "/ctl", "-O", "exit", destination])
      for _ in 0..<100 where Spawner.poll(pid) == nil { usleep(20_000) }
      if Spawner.poll(pid) == nil {
        kill(pid, SIGTERM)
        _ = Spawner.waitBlocking(pid)
      }
    }
    masterPID = nil
    if let dir = controlDirectory { try? FileManager.default.removeItem(atPath: dir) }
    controlDirectory = nil
  }

  /// Options that route a command through the master connection (when open).
  private var muxOptions: [String] {
    guard let dir = controlDirectory, masterPID != nil else { return ["-o", "BatchMode=yes"] }
    return ["-S", dir + "/ctl", "-o", "ControlMaster=no", "-o", "BatchMode=yes"]
  }

  // MARK: commands

  struct Result {
    var code: Int32
    var out: Data
    var err: String
    var text: String { String(decoding: out, as: UTF8.self) }
  }

  /// Runs `command` with the remote user's shell; stdout is returned, stderr collected.
  /// - Parameter stdin: a descriptor to feed the remote command (e.g. a `tar` pipe), else /dev/null.
  func run(_ command: String, stdin: Int32? = nil) throws -> Result {
    try Self.ssh(commonOptions + muxOptions + [destination, command], stdin: stdin)
  }

  /// Runs `command` with this process's stdin, stdout and stderr (`-t` when `tty`); returns its exit code.
  func runAttached(_ command: String, tty: Bool) throws -> Int32 {
    let args = commonOptions + muxOptions + (tty ? ["-t"] : []) + [destination, command]
    let child = try Spawner.spawn(
      "ssh", args, environment: ProcessInfo.processInfo.environment,
      stdin: .fd(STDIN_FILENO), stdout: .fd(STDOUT_FILENO), stderr: .fd(STDERR_FILENO), searchPath: true)
    return Spawner.waitBlocking(child.pid)
  }

  /// The arguments (after `ssh`) of a forwarding-only ssh process (`-N -L ...`), used by ``GatewayTunnel``.
  func forwardArguments(local: Int, remotePort: Int) -> [String] {
    commonOptions + [
      "-N", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none",
      "-L", "127.0.0.1:\(local):127.0.0.1:\(remotePort)", destination,
    ]
  }

  /// Runs ssh with `args`; stdout through a pipe, stderr through a private temporary file.
  static func ssh(_ args: [String], stdin: Int32? = nil) throws -> Result {
    let errPath = NSTemporaryDirectory() + "openshell-ssh-\(getpid())-\(UUID().uuidString).err"
    defer { unlink(errPath) }
    let child: SpawnedProcess
    do {
      child = try Spawner.spawn(
        "ssh", args, environment: ProcessInfo.processInfo.environment,
        stdin: stdin.map { .fd($0) } ?? .null, stdout: .pipe, stderr: .appendFile(errPath), searchPath: true)
    } catch {
      throw CLIError("ssh (the OpenSSH client) cannot be started: \(error); install it: apt-get install openssh-client")
    }
    let out =
      child.stdout.map { fd -> Data in
        let h = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        return h.readDataToEndOfFile()
      } ?? Data()
    let code = Spawner.waitBlocking(child.pid)
    return Result(code: code, out: out, err: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
  }

  // MARK: errors

  /// One line for a failed ssh connection: the step and the fix (OpenSSH's own wording is matched).
  static func describeFailure(_ stderr: String, status: Int32, destination d: String) -> String {
    let text = stderr
    let last = lastLine(text) ?? "ssh exited with \(status)"
    if text.contains("Permission denied") || text.contains("Too many authentication failures") {
      return
        "step 'ssh authentication' failed for \(d) (\(last)); pass --ssh-key PATH with a key listed in the host's ~/.ssh/authorized_keys (or load it into ssh-agent), and check: ssh \(d) true"
    }
    if text.contains("Host key verification failed") || text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
      return "step 'ssh host key' failed for \(d) (\(last)); verify the host's key and accept it once with: ssh \(d) true"
    }
    if text.contains("Could not resolve hostname") {
      return "step 'ssh connection' failed: \(last); check the host name (or its ~/.ssh/config entry)"
    }
    if text.contains("Connection refused") {
      return "step 'ssh connection' failed: \(last); is sshd running on the host and listening on that port?"
    }
    if text.contains("timed out") || text.contains("No route to host") || text.contains("Network is unreachable") {
      return "step 'ssh connection' failed: host unreachable (\(last)); check the address, the network and any firewall"
    }
    return "step 'ssh connection' failed for \(d): \(last)"
  }

  /// The last non-empty line of `s` (OpenSSH warnings come first, the reason last).
  static func lastLine(_ s: String) -> String? {
    s.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
      .last { !$0.isEmpty && !$0.hasPrefix("Warning: Permanently added") }
  }
}

/// `s` quoted for a POSIX shell (`'…'`, embedded quotes as `'\''`).
func shellQuote(_ s: String) -> String {
  if !s.isEmpty, s.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_./=:@%+,".contains($0)) }) { return s }
  return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
