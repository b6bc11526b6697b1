import Crypto
import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// Our binaries on a remote host: what is copied, where it goes, and how a version is identified.
///
/// - What: `openshell` (CLI and gateway daemon), `openshell-sandbox` (supervisor) and
///   `openshell-sandbox-launch` (launcher), taken from the directory of the running `openshell`, plus
///   every shared library they load from outside the system library directories (the Swift runtime
///   of the toolchain, e.g. `/opt/swift/usr/lib/swift/linux`). Debian libraries (liblmdb0, libzstd1,
///   libcurl4, …) are not copied: the host must have them; a missing one is named with its package.
/// - Where: `~/.local/share/openshell/remote/<version>/{bin,lib}/` of the SSH user (no root needed).
///   The copies' RUNPATH is set to that `lib/` directory (`patchelf`, on this machine), so the host's
///   own `/opt/swift`, if any, is never mixed in; inside a sandbox the supervisor finds the same
///   directory, which the local driver bind-mounts at its path.
/// - Version: `<CLI version>+<16 hex>` where the hex is the SHA-256 over the three binaries' names and
///   contents: a rebuilt binary is another version even when the version string is unchanged. The
///   install directory is complete once its `VERSION` file exists (it is uploaded to a temporary
///   directory and renamed into place), so an interrupted copy is never taken for an install.
struct RemoteInstall {
  static let binaries = ["openshell", "openshell-sandbox", "openshell-sandbox-launch"]
  static let cliVersion = "0.1.0"

  let binDirectory: String
  let version: String

  /// The bundle of the running `openshell`.
  /// - Throws: `CLIError` when a binary is missing next to it.
  static func local() throws -> RemoteInstall {
    let dir = (ProcessTable.selfExecutable as NSString).deletingLastPathComponent
    var hash = SHA256()
    for name in binaries {
      let path = dir + "/" + name
      guard let h = FileHandle(forReadingAtPath: path) else {
        throw CLIError("\(path) is missing: a remote install needs \(binaries.joined(separator: ", ")) next to openshell (build them: swift build)")
      }
      defer { try? h.close() }
      hash.update(data: Data(name.utf8))
      while let chunk = try? h.read(upToCount: 4 << 20), !chunk.isEmpty { hash.update(data: chunk) }
    }
    let hex = hash.finalize().map { String(format: "%02x", $0) }.joined()
    return RemoteInstall(binDirectory: dir, version: "\(cliVersion)+\(hex.prefix(16))")
  }

  /// The install directory on the host, relative to the SSH user's home.
  var relativeDirectory: String { ".local/share/openshell/remote/\(version)" }

  /// Shared libraries the binaries load from outside the system library directories.
  func runtimeLibraries() throws -> [String] {
    var libs = Set<String>()
    for name in Self.binaries {
      let r = try Self.capture("ldd", [binDirectory + "/" + name])
      let text = String(decoding: r.out, as: UTF8.self)
      if r.code != 0 && (text.contains("not a dynamic executable") || r.err.contains("not a dynamic executable")) { continue }
      for line in text.split(separator: "\n") {
        guard let arrow = line.range(of: "=> ") else { continue }
        let rest = line[arrow.upperBound...]
        guard rest.hasPrefix("/"), let path = rest.split(separator: " ").first.map(String.init) else {
          if rest.hasPrefix("not found") { throw CLIError("\(name) needs \(line.split(separator: " ").first ?? "") which is not found on this machine") }
          continue
        }
        let dir = (path as NSString).deletingLastPathComponent
        if !Self.systemLibraryDirectories.contains(dir) { libs.insert(path) }
      }
    }
    return libs.sorted()
  }

  static let systemLibraryDirectories: Set<String> = [
    "/lib", "/lib64", "/usr/lib", "/usr/lib64", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
  ]

  /// Sonames of Debian libraries the binaries need, with the Debian 12 package that provides each.
  static let debianPackages: [String: String] = [
    "liblmdb.so.0": "liblmdb0", "libzstd.so.1": "libzstd1", "libcurl.so.4": "libcurl4", "libseccomp.so.2": "libseccomp2",
    "libstdc++.so.6": "libstdc++6", "libz.so.1": "zlib1g", "libssl.so.3": "libssl3", "libcrypto.so.3": "libssl3",
  ]

  /// Copies the bundle into a private directory with RUNPATH set to `remoteLibrary` (absolute path on
  /// the host), writes `VERSION`, and returns the directory (the caller removes it).
  /// - Throws: `CLIError` when patchelf is missing or a copy fails.
  func stage(remoteLibrary: String) throws -> String {
    var template = Array("/tmp/openshell-stage-XXXXXX".utf8CString)
    guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
      throw CLIError("cannot create a staging directory: \(errnoString())")
    }
    let fm = FileManager.default
    do {
      try fm.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
      try fm.createDirectory(atPath: dir + "/lib", withIntermediateDirectories: true)
      for lib in try runtimeLibraries() {
        try fm.copyItem(atPath: lib, toPath: dir + "/lib/" + (lib as NSString).lastPathComponent)
      }
      for name in Self.binaries {
        let copy = dir + "/bin/" + name
        try fm.copyItem(atPath: binDirectory + "/" + name, toPath: copy)
        let probe = try Self.capture("patchelf", ["--print-interpreter", copy])
        guard probe.code == 0 else { continue }  // a static executable (the launcher): nothing to patch
        let r = try Self.capture("patchelf", ["--set-rpath", remoteLibrary, copy])
        guard r.code == 0 else { throw CLIError("patchelf --set-rpath on \(name) failed: \(oneLine(r.err))") }
      }
      try Data((version + "\n").utf8).write(to: URL(fileURLWithPath: dir + "/VERSION"))
      return dir
    } catch {
      try? fm.removeItem(atPath: dir)
      if let e = error as? CLIError { throw e }
      throw CLIError("cannot stage the binaries for the host: \(error)")
    }
  }

  /// Size in bytes of a staged directory (for the progress line).
  static func size(of dir: String) -> Int64 {
    var total: Int64 = 0
    for sub in ["bin", "lib"] {
      for f in (try? FileManager.default.contentsOfDirectory(atPath: dir + "/" + sub)) ?? [] {
        total += ((try? FileManager.default.attributesOfItem(atPath: dir + "/" + sub + "/" + f))?[.size] as? Int64) ?? 0
      }
    }
    return total
  }

  /// Streams `staged` with `tar` over `ssh` into `home/relativeDirectory` (temporary name, then rename).
  /// - Throws: `CLIError` naming the install step and the host's reason (e.g. permission denied).
  func upload(_ staged: String, over ssh: SSHConnection, home: String) throws {
    let base = home + "/.local/share/openshell/remote"
    let final = base + "/" + version
    let script = """
      set -e; umask 022; mkdir -p \(shellQuote(base)); t=$(mktemp -d \(shellQuote(base))/.incoming-XXXXXX); \
      trap 'rm -rf "$t"' EXIT; tar -xf - -C "$t"; \
      if [ -f \(shellQuote(final))/VERSION ]; then exit 0; fi; rm -rf \(shellQuote(final)); mv -T "$t" \(shellQuote(final))
      """
    let tar = try Spawner.spawn(
      "tar", ["-C", staged, "-cf", "-", "bin", "lib", "VERSION"], environment: ProcessInfo.processInfo.environment, stdout: .pipe, stderr: .null,
      searchPath: true)
    guard let pipe = tar.stdout else { throw CLIError("tar produced no stream") }
    let r: SSHConnection.Result
    do { r = try ssh.run("sh -c \(shellQuote(script))", stdin: pipe) } catch { Glibc.close(pipe); throw error }
    Glibc.close(pipe)
    let tarStatus = Spawner.waitBlocking(tar.pid)
    guard r.code == 0 else {
      let why = SSHConnection.lastLine(r.err) ?? "exit \(r.code)"
      let hint =
        why.contains("Permission denied") || why.contains("Read-only")
        ? "; \(ssh.destination) needs write permission in \(base)" : why.contains("No space") ? "; free space on the host" : ""
      throw CLIError("step 'install binaries' failed on \(ssh.destination) (\(final)): \(why)\(hint)")
    }
    guard tarStatus == 0 else { throw CLIError("step 'install binaries' failed: tar exited with \(tarStatus)") }
  }

  /// Checks on the host that the installed binaries load: names Debian packages for missing libraries.
  func verify(over ssh: SSHConnection, home: String) throws {
    let dir = home + "/" + relativeDirectory
    let r = try ssh.run(
      "ldd \(shellQuote(dir + "/bin/openshell")) \(shellQuote(dir + "/bin/openshell-sandbox")) 2>&1; \(shellQuote(dir + "/bin/openshell")) --version")
    let missing = r.text.split(separator: "\n").filter { $0.contains("not found") }.compactMap { $0.split(separator: " ").first.map(String.init) }
    if !missing.isEmpty {
      let names = Array(Set(missing)).sorted()
      let packages = Array(Set(names.compactMap { Self.debianPackages[$0] })).sorted()
      throw CLIError(
        "step 'check binaries' failed on \(ssh.destination): missing libraries \(names.joined(separator: ", "))"
          + (packages.isEmpty ? "" : "; install them on the host: sudo apt-get install \(packages.joined(separator: " "))"))
    }
    guard r.code == 0 else {
      throw CLIError(
        "step 'check binaries' failed on \(ssh.destination): \(dir)/bin/openshell does not run: \(SSHConnection.lastLine(r.text + "\n" + r.err) ?? "exit \(r.code)")"
      )
    }
  }

  /// Runs a local tool and captures its output.
  static func capture(_ tool: String, _ args: [String]) throws -> (code: Int32, out: Data, err: String) {
    let errPath = NSTemporaryDirectory() + "openshell-\(tool)-\(getpid())-\(UUID().uuidString).err"
    defer { unlink(errPath) }
    let child: SpawnedProcess
    do {
      child = try Spawner.spawn(tool, args, environment: ProcessInfo.processInfo.environment, stdout: .pipe, stderr: .appendFile(errPath), searchPath: true)
    } catch {
      let pkg = tool == "patchelf" ? "patchelf" : tool == "ldd" ? "libc-bin" : tool
      throw CLIError("\(tool) is needed on this machine for a remote install: apt-get install \(pkg)")
    }
    let out = child.stdout.map { FileHandle(fileDescriptor: $0, closeOnDealloc: true).readDataToEndOfFile() } ?? Data()
    let code = Spawner.waitBlocking(child.pid)
    return (code, out, (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
  }
}
