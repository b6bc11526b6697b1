import ArgumentParser
import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell sandbox upload|download`: tar over the SSH tunnel (as OpenShell), then a check that the
/// far side holds the same bytes: SHA-256 of a file, file count and total size of a directory. Success
/// is printed only after that check; a path that moved nothing is an error.
enum SandboxTransfer {
  /// Runs `producer | consumer` (two argv arrays); returns both exit statuses.
  static func pipeline(_ producer: [String], _ consumer: [String]) async throws -> (Int32, Int32) {
    let env = ProcessInfo.processInfo.environment
    let first = try Spawner.spawn(producer[0], Array(producer.dropFirst()), environment: env, stdin: .null, stdout: .pipe, stderr: .fd(2))
    let second = try Spawner.spawn(consumer[0], Array(consumer.dropFirst()), environment: env, stdin: .fd(first.stdout!), stdout: .null, stderr: .fd(2))
    close(first.stdout!)
    async let a = Spawner.wait(first.pid)
    async let b = Spawner.wait(second.pid)
    return await (a, b)
  }

  /// Runs `ssh … host CMD` and returns its stdout (trimmed) and status.
  static func remote(_ ssh: [String], _ command: String) async throws -> (String, Int32) {
    let p = try Spawner.spawn("/usr/bin/ssh", ssh + [command], environment: ProcessInfo.processInfo.environment, stdin: .null, stdout: .pipe, stderr: .fd(2))
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

  func run() async throws {
    try await cliRun {
      let local = URL(fileURLWithPath: localPath).standardizedFileURL.path
      let summary = try SandboxTransfer.localSummary(local)
      let r = try global.resolve()
      try SSHTunnel.ensureIdentity()
      let ssh = SSHCommandLine.nameModeOptions(r, name: name, workspace: workspace) + [SSHTunnel.alias(name, workspace: workspace)]
      let parent = (local as NSString).deletingLastPathComponent
      let base = (local as NSString).lastPathComponent
      let q = SSHCommandLine.quote(dest)
      let (tarStatus, sshStatus) = try await SandboxTransfer.pipeline(
        ["/usr/bin/tar", "-C", parent, "-cf", "-", "--", base], ["/usr/bin/ssh"] + ssh + ["mkdir -p -- \(q) && tar -C \(q) -xf -"])
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

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      try SSHTunnel.ensureIdentity()
      let ssh = SSHCommandLine.nameModeOptions(r, name: name, workspace: workspace) + [SSHTunnel.alias(name, workspace: workspace)]
      let path = sandboxPath.hasPrefix("/") ? sandboxPath : (SandboxProtocol.workspace as NSString).appendingPathComponent(sandboxPath)
      let (remote, status) = try await SandboxTransfer.remote(ssh, SandboxTransfer.summaryCommand(path))
      guard status == 0 else { throw CLIError("cannot reach sandbox \(name) (ssh exit \(status))") }
      guard remote != "missing" else { throw CLIError("\(name):\(path): no such file or directory") }
      try FileManager.default.createDirectory(atPath: dest, withIntermediateDirectories: true)
      let parent = (path as NSString).deletingLastPathComponent
      let base = (path as NSString).lastPathComponent
      // The stream is untrusted: extracted into a private staging directory, checked, then moved (SafeExtract).
      let staging = try PrivateDirectory.make(in: dest, prefix: ".openshell-download-")
      defer { try? FileManager.default.removeItem(atPath: staging) }
      let (sshStatus, tarStatus) = try await SandboxTransfer.pipeline(
        ["/usr/bin/ssh"] + ssh + ["tar -C \(SSHCommandLine.quote(parent)) -cf - -- \(SSHCommandLine.quote(base))"],
        ["/usr/bin/tar", "-C", staging] + SafeExtract.tarFlags + ["-xf", "-"])
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
