import CConfine

#if canImport(Glibc)
  import Glibc
#endif

/// The launcher `openshell-sandbox-launch <plan options> -- COMMAND [ARG…]` (``ConfinementPlan/parse(_:)``).
///
/// The supervisor starts every workload process (main command, exec) through it instead of executing
/// the command directly. A small single-threaded program without Foundation or Swift concurrency (its
/// start-up costs about what `setpriv` did), it applies the ``ConfinementPlan`` to itself in OpenShell's
/// order (enforcement-and-ssh.md §1.4, "Child setup order") and then `execvp`s the command:
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
public enum Launcher {
  /// Why a step failed (the one-line message).
  public struct Failure: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
  }

  /// The launcher's entry point: parses, confines, executes; never returns.
  public static func main(_ args: [String]) -> Never {
    let plan: ConfinementPlan
    let command: [String]
    do { (plan, command) = try ConfinementPlan.parse(args.dropFirst()) } catch {
      fail("\(error) (usage: openshell-sandbox-launch <plan options> -- COMMAND [ARG...])")
    }
    do { try apply(plan) } catch { fail("\(error)") }
    execute(command)
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
    defer { close(fd) }
    let r = cconfine_setns_net(fd)
    guard r == 0 else { throw Failure("cannot enter the network namespace \(path): \(String(cString: strerror(-r)))") }
  }

  /// execvp(3) with the inherited environment (its PATH); never returns.
  static func execute(_ command: [String]) -> Never {
    let argv = command.map { strdup($0) } + [nil]
    execvp(command[0], argv)
    let e = errno
    printError("openshell-sandbox: \(command[0]): \(String(cString: strerror(e)))\n")
    exit(e == ENOENT ? 127 : 126)
  }

  static func fail(_ message: String) -> Never {
    printError("openshell-sandbox: confinement failed: \(message); the command was not run\n")
    exit(ConfinementPlan.failureExitCode)
  }

  static func printError(_ text: String) {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
      let n = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
      if n <= 0 { return }
      offset += n
    }
  }
}
