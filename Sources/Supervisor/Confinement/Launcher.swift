import CConfine
import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// The supervisor's launcher mode: `openshell-sandbox --confine <plan JSON> -- COMMAND [ARG…]`.
///
/// The supervisor starts every workload process (main command, exec) through this mode instead of
/// executing the command directly. Running single-threaded, before any Swift concurrency starts
/// (``SupervisorMain/main()`` dispatches here first), it applies the ``ConfinementPlan`` to itself in
/// OpenShell's order (enforcement-and-ssh.md §1.4, "Child setup order") and then `execvp`s the command:
///
/// 1. enter the sandbox's network namespace (`setns(CLONE_NEWNET)`) when the plan names one;
/// 2. open the Landlock path descriptors while still privileged (root-only paths open too);
/// 3. clear the capability bounding set (needs CAP_SETPCAP, which the supervisor keeps for this);
/// 4. `setgroups` / `setgid` / `setuid` to the `sandbox` user, clear inheritable and ambient
///    capabilities, and verify every capability set is empty;
/// 5. `PR_SET_NO_NEW_PRIVS`, `PR_SET_DUMPABLE` 0, `RLIMIT_CORE` 0;
/// 6. Landlock `restrict_self`;
/// 7. the seccomp filter (``SeccompFilter``);
/// 8. `execvp` the command.
///
/// Fail closed: when any step fails, nothing is executed; one line `openshell-sandbox: confinement
/// failed: …; the command was not run` goes to stderr and the exit code is
/// ``ConfinementPlan/failureExitCode`` (126). A command that cannot be executed exits 127 (not found)
/// or 126, as a shell does.
enum Launcher {
  struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
  }

  /// Runs launcher mode when the arguments ask for it; otherwise returns at once.
  static func runIfRequested(_ args: [String] = CommandLine.arguments) {
    guard args.count >= 2, args[1] == ConfinementPlan.launcherFlag else { return }
    guard args.count >= 5, args[3] == "--" else {
      fail("usage: openshell-sandbox \(ConfinementPlan.launcherFlag) <plan JSON> -- COMMAND [ARG...]")
    }
    let plan: ConfinementPlan
    do { plan = try JSONDecoder().decode(ConfinementPlan.self, from: Data(args[2].utf8)) } catch {
      fail("the confinement plan does not decode: \(error)")
    }
    do { try apply(plan) } catch { fail("\(error)") }
    execute(Array(args[4...]))
  }

  /// Applies every step of the plan to the calling process (see the type's documentation).
  static func apply(_ plan: ConfinementPlan) throws {
    if let path = plan.networkNamespacePath { try enterNetworkNamespace(path) }
    let ruleset = try LandlockRuleset.prepare(plan)
    defer { ruleset?.close() }
    if plan.uid != nil { try Privileges.clearBoundingSet() }
    if let uid = plan.uid, let gid = plan.gid { try Privileges.switchUser(uid: uid, gid: gid, groups: plan.groups) }
    try Privileges.clearRemaining()
    try Privileges.verifyNone()
    try Privileges.harden()
    try ruleset?.restrictSelf()
    try SeccompFilter.install()
  }

  /// `setns(open(path), CLONE_NEWNET)`.
  static func enterNetworkNamespace(_ path: String) throws {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw Failure("cannot open the network namespace \(path): \(String(cString: strerror(errno)))") }
    defer { Glibc.close(fd) }
    let r = cconfine_setns_net(fd)
    guard r == 0 else { throw Failure("cannot enter the network namespace \(path): \(String(cString: strerror(-r)))") }
  }

  /// execvp(3) with the inherited environment (its PATH); never returns.
  static func execute(_ command: [String]) -> Never {
    let argv = command.map { strdup($0) } + [nil]
    execvp(command[0], argv)
    let e = errno
    FileHandle.standardError.write(Data("openshell-sandbox: \(command[0]): \(String(cString: strerror(e)))\n".utf8))
    exit(e == ENOENT ? 127 : 126)
  }

  static func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("openshell-sandbox: confinement failed: \(message); the command was not run\n".utf8))
    exit(ConfinementPlan.failureExitCode)
  }
}
