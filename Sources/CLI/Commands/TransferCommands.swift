import ArgumentParser
import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell sandbox upload|download`: tar over the SSH tunnel (as OpenShell), then a check that the
/// far side holds the same bytes: SHA-256 of a file, file count and total size of a directory. Success
/// is printed only after that check; a path that moved nothing is an error. The stream passes through
/// the CLI (``TransferMeter``): a progress bar on a terminal, and `--max-size` (default 8 GiB), checked
/// against both sides' measurements before anything moves and against the stream while it flows.
enum SandboxTransfer {
  /// The default of `--max-size`: the most payload bytes one upload or download moves.
  static let defaultLimit = "8G"

  /// Runs `producer | openshell | consumer` (two argv arrays): the stream passes through `meter`
  /// (counted, limited, progress bar); both are ended when the limit is exceeded.
  /// - Returns: both exit statuses.
  /// - Throws: `CLIError` naming the limit when it was exceeded, or saying that nothing moved.
  static func pipeline(_ producer: [String], _ consumer: [String], meter: TransferMeter, what: String) async throws -> (Int32, Int32) {
    let env = ProcessInfo.processInfo.environment
    signal(SIGPIPE, SIG_IGN)  // a consumer that ends early is an exit status, not a signal to us
    let first = try Spawner.spawn(producer[0], Array(producer.dropFirst()), environment: env, stdin: .null, stdout: .pipe, stderr: .fd(2))
    let second: SpawnedProcess
    do {
      second = try Spawner.spawn(consumer[0], Array(consumer.dropFirst()), environment: env, stdin: .pipe, stdout: .null, stderr: .fd(2))
    } catch {
      kill(first.pid, SIGKILL)
      _ = await Spawner.wait(first.pid)
      throw error
    }
    let within = await meter.pump(from: first.stdout!, to: second.stdin!)
    if !within {
      kill(first.pid, SIGTERM)
      kill(second.pid, SIGTERM)
    }
    async let a = Spawner.wait(first.pid)
    async let b = Spawner.wait(second.pid)
    let statuses = await (a, b)
    guard within else {
      throw CLIError("\(what): the stream exceeded the transfer limit of \(TransferMeter.size(meter.limit)) (--max-size) and was cut")
    }
    if meter.moved == 0, statuses.0 == 0, statuses.1 == 0 { throw CLIError("\(what): nothing was transferred") }
    return statuses
  }

  /// The `--max-size` value in bytes.
  static func limit(_ text: String) throws -> UInt64 {
    guard let n = TransferMeter.parseSize(text), n > 0 else { throw CLIError("--max-size \(text): not a size (e.g. 500M, 8G)") }
    return n
  }

  /// Refuses a transfer whose payload (from a summary) is over the limit before anything moves.
  static func checkLimit(_ summary: String, limit: UInt64, what: String) throws -> UInt64 {
    let bytes = summary.split(separator: " ").last.flatMap { UInt64($0) } ?? 0
    if bytes > limit {
      throw CLIError("\(what): \(TransferMeter.size(bytes)) is more than the transfer limit of \(TransferMeter.size(limit)) (--max-size); nothing was copied")
    }
    return bytes
  }

  /// Runs `ssh … host CMD` and returns its stdout (trimmed) and status.
  static func remote(_ ssh: [String], _ command: String) async throws -> (String, Int32) {
    let p = try Spawner.spawn(
      SSHTunnel.sshClient, ssh + [command], environment: ProcessInfo.processInfo.environment, stdin: .null, stdout: .pipe, stderr: .fd(2))
    var out = Data()
    for await chunk in readChunks(p.stdout!) { out.append(chunk) }
    let status = await Spawner.wait(p.pid)
    return (String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines), status)
  }

  /// What a local path holds, in ``summaryCommand(_:)``'s format (run here with `/bin/sh`).
  static func localSummary(_ path: String) throws -> String {
    guard FileManager.default.fileExists(atPath: path) else { throw CLIError("\(path): no such file or directory") }
    let (out, status) = try capture(["/bin/sh", "-c", summaryCommand(path)])
    guard status == 0 else { throw CLIError("cannot read \(path)") }
    return out.trimmingCharacters(in: .whitespacesAndNewlines)
  }

  /// A shell command that describes `path`: `file SHA256 BYTES`, `dir FILES BYTES` (regular files
  /// below it) or `missing`. Run in the sandbox (over ssh) and here, so both sides are measured alike.
  static func summaryCommand(_ path: String) -> String {
    let q = SSHCommandLine.quote(path)
    return "if [ -d \(q) ]; then find \(q) -type f -printf '%s\\n' | awk '{n++; s+=$1} END {print \"dir\", n+0, s+0}'; "
      + "elif [ -f \(q) ]; then printf 'file %s ' \"$(sha256sum < \(q) | cut -c1-64)\"; wc -c < \(q); else echo missing; fi"
  }

  static func capture(_ argv: [String]) throws -> (String, Int32) {
    let p = try Spawner.spawn(argv[0], Array(argv.dropFirst()), environment: [:], stdin: .null, stdout: .pipe, stderr: .null)
    var out = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
      let n = read(p.stdout!, &buffer, buffer.count)
      if n > 0 { out.append(contentsOf: buffer[0..<n]) } else if n < 0 && errno == EINTR { continue } else { break }
    }
    close(p.stdout!)
    return (String(decoding: out, as: UTF8.self), Spawner.waitBlocking(p.pid))
  }

  /// Compares both sides' summaries.
  /// - Returns: (files, bytes) moved.
  /// - Throws: `CLIError` naming what differs (or that nothing arrived).
  static func verify(_ local: String, remote: String, what: String) throws -> (Int, UInt64) {
    let words = local.split(separator: " ").map(String.init)
    guard words.count == 3, let bytes = UInt64(words[2]) else { throw CLIError("\(what): cannot measure the local side (\(local))") }
    guard remote == local else {
      throw CLIError("\(what): the copy does not match (expected '\(local)', got '\(remote.isEmpty || remote == "missing" ? "nothing" : remote)')")
    }
    if words[0] == "dir", Int(words[1]) == 0 { throw CLIError("\(what): the directory holds no files; nothing was copied") }
    return (words[0] == "file" ? 1 : Int(words[1]) ?? 0, bytes)
  }
}

struct SandboxUpload: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "upload", abstract: "Copy a local file or directory into a sandbox (tar over SSH, checked).")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name.") var name: String
  @Argument(help: "Local file or directory.") var localPath: String
  @Argument(help: "Directory in the sandbox (default /sandbox).") var dest: String = SandboxProtocol.workspace
  @Option(help: "Workspace.") var workspace = "default"
  @Option(help: "The most bytes to copy (e.g. 500M, 8G); a larger transfer is refused naming this limit.") var maxSize = SandboxTransfer.defaultLimit

  func run() async throws {
    try await cliRun {
      let local = URL(fileURLWithPath: localPath).standardizedFileURL.path
      let limit = try SandboxTransfer.limit(maxSize)
      let summary = try SandboxTransfer.localSummary(local)
      let what = "upload of \(local)"
      let expected = try SandboxTransfer.checkLimit(summary, limit: limit, what: what)
      let r = try global.resolve()
      try await SandboxCLI.requireReady(r, name: name, workspace: workspace)
      try SSHTunnel.ensureIdentity()
      let ssh = SSHCommandLine.nameModeOptions(r, name: name, workspace: workspace) + [SSHTunnel.alias(name, workspace: workspace)]
      let parent = (local as NSString).deletingLastPathComponent
      let base = (local as NSString).lastPathComponent
      let q = SSHCommandLine.quote(dest)
      let (tarStatus, sshStatus) = try await SandboxTransfer.pipeline(
        ["/usr/bin/tar", "-C", parent, "-cf", "-", "--", base], [SSHTunnel.sshClient] + ssh + ["mkdir -p -- \(q) && tar -C \(q) -xf -"],
        meter: TransferMeter(label: "Uploading \(base)", expected: expected, limit: limit), what: what)
      guard tarStatus == 0, sshStatus == 0 else { throw CLIError("upload failed (tar exit \(tarStatus), ssh exit \(sshStatus))") }
      let target = (dest as NSString).appendingPathComponent(base)
      let (remote, _) = try await SandboxTransfer.remote(ssh, SandboxTransfer.summaryCommand(target))
      let (files, bytes) = try SandboxTransfer.verify(summary, remote: remote, what: "upload of \(local)")
      print("✓ Uploaded \(bytes) bytes (\(files) file\(files == 1 ? "" : "s"), checked) to \(name):\(target)")
    }
  }
}

struct SandboxDownload: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "download", abstract: "Copy a file or directory out of a sandbox (tar over SSH, checked).")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name.") var name: String
  @Argument(help: "Path in the sandbox.") var sandboxPath: String
  @Argument(help: "Local directory (default .).") var dest: String = "."
  @Option(help: "Workspace.") var workspace = "default"
  @Option(help: "The most bytes to copy (e.g. 500M, 8G); a larger transfer is refused naming this limit.") var maxSize = SandboxTransfer.defaultLimit

  func run() async throws {
    try await cliRun {
      let limit = try SandboxTransfer.limit(maxSize)
      let r = try global.resolve()
      try await SandboxCLI.requireReady(r, name: name, workspace: workspace)
      try SSHTunnel.ensureIdentity()
      let ssh = SSHCommandLine.nameModeOptions(r, name: name, workspace: workspace) + [SSHTunnel.alias(name, workspace: workspace)]
      let path = sandboxPath.hasPrefix("/") ? sandboxPath : (SandboxProtocol.workspace as NSString).appendingPathComponent(sandboxPath)
      let (remote, status) = try await SandboxTransfer.remote(ssh, SandboxTransfer.summaryCommand(path))
      guard status == 0 else { throw CLIError("cannot reach sandbox \(name) (ssh exit \(status))") }
      guard remote != "missing" else { throw CLIError("\(name):\(path): no such file or directory") }
      let what = "download of \(name):\(path)"
      let expected = try SandboxTransfer.checkLimit(remote, limit: limit, what: what)
      try FileManager.default.createDirectory(atPath: dest, withIntermediateDirectories: true)
      let parent = (path as NSString).deletingLastPathComponent
      let base = (path as NSString).lastPathComponent
      // The stream is untrusted: extracted into a private staging directory, checked, then moved (SafeExtract).
      let staging = try PrivateDirectory.make(in: dest, prefix: ".openshell-download-")
      defer { try? FileManager.default.removeItem(atPath: staging) }
      let (sshStatus, tarStatus) = try await SandboxTransfer.pipeline(
        [SSHTunnel.sshClient] + ssh + ["tar -C \(SSHCommandLine.quote(parent)) -cf - -- \(SSHCommandLine.quote(base))"],
        ["/usr/bin/tar", "-C", staging] + SafeExtract.tarFlags + ["-xf", "-"],
        meter: TransferMeter(label: "Downloading \(base)", expected: expected, limit: limit), what: what)
      guard tarStatus == 0, sshStatus == 0 else { throw CLIError("download failed (ssh exit \(sshStatus), tar exit \(tarStatus)); nothing was written") }
      let extracted = try FileManager.default.contentsOfDirectory(atPath: staging)
      guard extracted == [base] else {
        throw CLIError("download failed: the sandbox sent \(extracted.count) top-level entries instead of \(base); nothing was written")
      }
      try SafeExtract.check(staging)
      let summary = try SandboxTransfer.localSummary((staging as NSString).appendingPathComponent(base))
      let (files, bytes) = try SandboxTransfer.verify(summary, remote: remote, what: "download of \(name):\(path)")
      let local = try SafeExtract.install(staging: staging, base: base, dest: URL(fileURLWithPath: dest).standardizedFileURL.path)
      print("✓ Downloaded \(bytes) bytes (\(files) file\(files == 1 ? "" : "s"), checked) to \(local)")
    }
  }
}
