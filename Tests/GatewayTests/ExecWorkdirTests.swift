import Foundation
import SandboxConfinement
import SandboxSeccomp
import Testing

@testable import Gateway

/// Where an exec starts: its workdir is entered by the launcher as the confined workload user, never with
/// the supervisor's privileges (run with the other local-driver tests: same suite, serialized).
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
}
