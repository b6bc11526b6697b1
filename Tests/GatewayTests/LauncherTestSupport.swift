import Foundation
import SandboxConfinement
import SandboxProtocol

@testable import Gateway

/// Running the built launcher (`openshell-sandbox-launch`) directly, as the supervisor runs it, outside any
/// sandbox: shared by the launcher tests of ``ConfinementTests`` (seccomp delivery, `--chdir`, command lookup).
extension ConfinementTests {
  /// The plan those tests confine with: this host's `sandbox` user, the system directories and `/dev`
  /// read-only, `/tmp` read-write (also its workdir), Landlock best effort.
  static func hostLauncherPlan() throws -> ConfinementPlan {
    let user = try SandboxUser.resolve()
    return ConfinementPlan(
      user: "sandbox", uid: user.uid, gid: user.gid, groups: [user.gid], readOnly: ["/usr", "/lib", "/lib64", "/bin", "/etc", "/proc", "/dev"],
      readWrite: ["/tmp"], includeWorkdir: false, workdir: "/tmp", landlockCompatibility: "best_effort")
  }

  /// Runs the built launcher with `options -- command` in `environment` (which the command inherits), started
  /// in `/tmp`; returns exit code, stdout and stderr.
  func launch(
    _ options: [String], _ command: [String], environment: [String: String] = ["PATH": "/usr/bin:/bin"]
  ) throws -> (code: Int32, out: String, err: String) {
    let dir = (LocalComputeDriver.defaultSupervisorBinary() as NSString).deletingLastPathComponent
    let p = Process()
    p.executableURL = URL(fileURLWithPath: (dir as NSString).appendingPathComponent(SandboxProtocol.launcherName))
    p.arguments = options + ["--"] + command
    p.environment = environment
    p.currentDirectoryURL = URL(fileURLWithPath: "/tmp")
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
  }
}
