import Foundation
import SandboxConfinement
import SandboxSeccomp
import Testing

@testable import Gateway

/// Where an exec starts and what it runs: its workdir is entered and its command looked up by the launcher as
/// the confined workload user, never with the supervisor's privileges, so nothing tells that user what lies
/// where it may not look (run with the other local-driver tests: same suite, serialized).
extension SandboxLifecycleTests {
  @Test(
    "exec: the workdir is entered as the workload user; one it may not enter is refused, relative ones start in the workspace",
    .enabled(if: geteuid() == 0))
  func execWorkdirAsWorkloadUser() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.create("exec-workdir")
      try await c.wait("exec-workdir", .ready)

      // A directory only root may enter, made from the host in the sandbox's workspace: the supervisor (root)
      // could enter it, the workload user cannot. Before the launcher entered the workdir, `pwd` ran there.
      let sandboxes = gw.dataDirectory + "/sandboxes"
      let ids = try FileManager.default.contentsOfDirectory(atPath: sandboxes)
      try #require(ids.count == 1, "\(ids)")
      let rootOnly = sandboxes + "/" + ids[0] + "/workspace/root-only"
      try #require(mkdir(rootOnly, 0o700) == 0 && chown(rootOnly, 0, 0) == 0)
      let mode = try await c.exec("exec-workdir", ["stat", "-c", "%a:%U", "/sandbox/root-only"])
      #expect(mode.exitCode == 0 && mode.out == "700:root\n", "precondition: \(mode.out) \(mode.err)")
      let denied = try await c.exec("exec-workdir", ["pwd"], workdir: "/sandbox/root-only")
      #expect(denied.exitCode == 1, "\(denied.out) \(denied.err)")
      #expect(denied.err == "openshell-sandbox: workdir /sandbox/root-only: permission denied\n")
      #expect(denied.out == "")
      let deniedRelative = try await c.exec("exec-workdir", ["pwd"], workdir: "root-only")
      #expect(deniedRelative.exitCode == 1 && deniedRelative.err == "openshell-sandbox: workdir /sandbox/root-only: permission denied\n")
      // The same as a shell in the sandbox sees it.
      let shell = try await c.exec("exec-workdir", ["sh", "-c", "cd /sandbox/root-only && echo entered"])
      #expect(shell.exitCode != 0 && shell.out == "", "\(shell.out) \(shell.err)")

      // Directories the workload user may enter still work, absolute and relative to the workspace.
      let made = try await c.exec("exec-workdir", ["mkdir", "-p", "/sandbox/sub/deeper"])
      #expect(made.exitCode == 0, "\(made.err)")
      let absolute = try await c.exec("exec-workdir", ["sh", "-c", "pwd; id -un"], workdir: "/sandbox/sub")
      #expect(absolute.exitCode == 0 && absolute.out == "/sandbox/sub\nsandbox\n", "\(absolute.out) \(absolute.err)")
      let relative = try await c.exec("exec-workdir", ["pwd"], workdir: "sub/deeper")
      #expect(relative.exitCode == 0 && relative.out == "/sandbox/sub/deeper\n", "\(relative.out) \(relative.err)")
      let tmp = try await c.exec("exec-workdir", ["pwd"], workdir: "/tmp")
      #expect(tmp.exitCode == 0 && tmp.out == "/tmp\n", "\(tmp.out) \(tmp.err)")
    }
    await gw.stopEverything()
  }

  @Test(
    "exec: inside a directory the workload user may not search, a file, a directory and nothing look alike (workdir and command)",
    .enabled(if: geteuid() == 0))
  func execHidesNamesInUnsearchableDirectories() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.create("exec-hidden")
      try await c.wait("exec-hidden", .ready)

      // From the host, in the sandbox's workspace (its /sandbox): /sandbox/secret, root's, mode 0700, holding an
      // executable file `f` and a directory `d`. The supervisor (root) sees both; the workload user sees nothing.
      let sandboxes = gw.dataDirectory + "/sandboxes"
      let ids = try FileManager.default.contentsOfDirectory(atPath: sandboxes)
      try #require(ids.count == 1, "\(ids)")
      let secret = sandboxes + "/" + ids[0] + "/workspace/secret"
      try #require(mkdir(secret, 0o700) == 0 && chown(secret, 0, 0) == 0)
      try #require(FileManager.default.createFile(atPath: secret + "/f", contents: Data("#!/bin/sh\necho ran\n".utf8)))
      try #require(chmod(secret + "/f", 0o755) == 0 && mkdir(secret + "/d", 0o755) == 0)
      let seen = try await c.exec("exec-hidden", ["sh", "-c", "stat -c %a:%U /sandbox/secret; ls /sandbox/secret"])
      #expect(seen.exitCode != 0 && seen.out == "700:root\n", "precondition: \(seen.out) \(seen.err)")

      // What an exec answers, with the path (or name) it was given replaced by PATH.
      func shape(_ r: (exitCode: Int32?, out: String, err: String), _ path: String) -> String {
        "\(r.exitCode.map { String($0) } ?? "none") [\(r.out)] [\(r.err.replacingOccurrences(of: " \(path): ", with: " PATH: "))]"
      }
      var workdirs: [String] = []
      var commands: [String] = []
      var searched: [String] = []
      for name in ["f", "d", "missing"] {
        let path = "/sandbox/secret/" + name
        let r = try await c.exec("exec-hidden", ["pwd"], workdir: path)
        workdirs.append(shape((r.exitCode, r.out, r.err), path))
        let run = try await c.exec("exec-hidden", [path])
        commands.append(shape((run.exitCode, run.out, run.err), path))
        let found = try await c.exec("exec-hidden", [name], env: ["PATH": "/sandbox/secret:/nonexistent"])
        searched.append(shape((found.exitCode, found.out, found.err), name))
      }
      #expect(workdirs == Array(repeating: "1 [] [openshell-sandbox: workdir PATH: permission denied\n]", count: 3), "\(workdirs)")
      #expect(commands == Array(repeating: "126 [] [openshell-sandbox: PATH: permission denied\n]", count: 3), "\(commands)")
      #expect(searched == Array(repeating: "126 [] [openshell-sandbox: PATH: permission denied\n]", count: 3), "\(searched)")
      try await c.deleteAndWait("exec-hidden")
    }
    await gw.stopEverything()
  }
}

extension ConfinementTests {
  @Test("the launcher enters --chdir after confining itself; a relative or unenterable one runs nothing", .enabled(if: isRoot))
  func launcherChdirAfterConfinement() throws {
    let user = try SandboxUser.resolve()
    let options = try Self.hostLauncherPlan().launcherArguments + ["--seccomp-bpf", try SeccompFilter.compile().hex]
    let entered = try launch(options + ["--chdir", "/usr/bin"], ["sh", "-c", "pwd; id -u"])
    #expect(entered.code == 0 && entered.out == "/usr/bin\n\(user.uid)\n", "\(entered)")
    let root = try launch(options + ["--chdir", "/root"], ["sh", "-c", "echo ran"])
    #expect(root.code == 1 && root.out.isEmpty && root.err == "openshell-sandbox: workdir /root: permission denied\n", "\(root)")
    let relative = try launch(options + ["--chdir", "tmp"], ["sh", "-c", "echo ran"])
    #expect(relative.code == 126 && relative.out.isEmpty, "\(relative)")
    #expect(relative.err.hasPrefix("openshell-sandbox: confinement failed: --chdir expects an absolute path, got 'tmp'"), "\(relative)")
  }

  @Test("the launcher looks the command up as the workload user: nothing inside a directory it may not search is told apart", .enabled(if: isRoot))
  func launcherLooksCommandsUpConfined() throws {
    let options = try Self.hostLauncherPlan().launcherArguments + ["--seccomp-bpf", try SeccompFilter.compile().hex]
    let secret = try GatewayTestSupport.temporaryDirectory("hidden") + "/secret"
    try #require(mkdir(secret, 0o700) == 0 && chown(secret, 0, 0) == 0 && chmod((secret as NSString).deletingLastPathComponent, 0o755) == 0)
    defer { try? FileManager.default.removeItem(atPath: (secret as NSString).deletingLastPathComponent) }
    try #require(FileManager.default.createFile(atPath: secret + "/f", contents: Data("#!/bin/sh\necho ran\n".utf8)))
    try #require(chmod(secret + "/f", 0o755) == 0 && mkdir(secret + "/d", 0o755) == 0)
    for name in ["f", "d", "missing"] {
      let path = secret + "/" + name
      let entered = try launch(options + ["--chdir", path], ["true"])
      #expect(entered.code == 1 && entered.err == "openshell-sandbox: workdir \(path): permission denied\n", "\(entered)")
      let run = try launch(options, [path])
      #expect(run.code == 126 && run.out.isEmpty && run.err == "openshell-sandbox: \(path): permission denied\n", "\(run)")
      let searched = try launch(options, [name], environment: ["PATH": secret + ":/nonexistent"])
      #expect(searched.code == 126 && searched.err == "openshell-sandbox: \(name): permission denied\n", "\(searched)")
    }
    // Where the workload user may look, the shell's distinctions stay (as the workload user sees them).
    let missing = try launch(options, ["/tmp/no-such-command-\(getpid())"])
    #expect(missing.code == 127 && missing.err == "openshell-sandbox: /tmp/no-such-command-\(getpid()): no such file or directory\n", "\(missing)")
    let notFound = try launch(options, ["no-such-command-\(getpid())"])
    #expect(notFound.code == 127 && notFound.err == "openshell-sandbox: no-such-command-\(getpid()): command not found\n", "\(notFound)")
    let directory = try launch(options, ["/usr"])
    #expect(directory.code == 126 && directory.err == "openshell-sandbox: /usr: is a directory\n", "\(directory)")
    let shadow = try launch(options, ["/etc/shadow"])
    #expect(shadow.code == 126 && shadow.err == "openshell-sandbox: /etc/shadow: permission denied\n", "\(shadow)")
    let relative = try launch(options + ["--chdir", "/usr"], ["bin/true"])
    #expect(relative.code == 0 && relative.err.isEmpty, "\(relative)")
  }
}
