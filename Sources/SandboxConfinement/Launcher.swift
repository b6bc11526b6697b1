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
/// 7. the seccomp filter: the BPF program the supervisor compiled once with libseccomp
///    (`SandboxSeccomp.SeccompFilter`), passed as `--seccomp-bpf HEX` (``SeccompProgram``); without
///    it nothing runs;
/// 8. `chdir` to the command's working directory (`--chdir`), now as the workload user;
/// 9. look the command up as that user (``CommandLookup``) and `execvp` it.
///
/// Fail closed: when any step fails, nothing is executed; one line `openshell-sandbox: confinement
/// failed: …; the command was not run` goes to stderr and the exit code is
/// ``ConfinementPlan/failureExitCode`` (126). A command that cannot be executed exits 127 (not found)
/// or 126, as a shell does, with one line `openshell-sandbox: NAME: REASON`. The supervisor (root) checks
/// neither the working directory nor the command: what it could see, the workload user may not.
public enum Launcher {
  /// Why a step failed (the one-line message).
  public struct Failure: Error, CustomStringConvertible {
    /// What failed and why, as printed after `confinement failed: `.
    public let description: String
    /// A failure with this message.
    public init(_ d: String) { description = d }
  }

  /// The launcher's entry point: parses, confines, executes; never returns.
  public static func main(_ args: [String]) -> Never {
    if args.count > 1, args[1] == sshSessionFlag { sshSession(args.dropFirst(2)) }
    do { try adoptEnvironment() } catch { fail("\(error)") }
    let request: LaunchRequest
    do { request = try ConfinementPlan.parseLaunch(args.dropFirst()) } catch {
      fail("\(error) (usage: openshell-sandbox-launch <plan options> --seccomp-bpf HEX [--chdir DIR] -- COMMAND [ARG...])")
    }
    guard let seccomp = request.seccomp else { fail("no seccomp program (--seccomp-bpf) was given") }
    do { try apply(request.plan, seccomp: seccomp) } catch { fail("\(error)") }
    if let dir = request.workingDirectory { enterWorkingDirectory(dir) }
    refuseUnrunnable(request.command[0])
    execute(request.command)
  }

  /// Ends the launcher with a shell's message and exit code (127 not found, 126 not executable) when the
  /// workload user cannot execute `name` (``CommandLookup``; the workload's `PATH`, else `/usr/bin:/bin`).
  static func refuseUnrunnable(_ name: String) {
    let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
    guard let problem = CommandLookup.problem(name, searchPath: path) else { return }
    printError("openshell-sandbox: \(problem.message)\n")
    exit(problem.exitCode)
  }

  /// `chdir(dir)` as the confined workload user (after every step of the plan), so a directory that user
  /// may not enter is refused as a `cd` in the workload would be, and whatever lies inside a directory it
  /// may not search (a file, a directory, nothing) is refused alike: the supervisor, which runs as root,
  /// does not look first. On failure: one line `openshell-sandbox: workdir DIR: REASON` (`no such
  /// directory`, `not a directory`, `permission denied`), exit 1; nothing is executed.
  static func enterWorkingDirectory(_ dir: String) {
    guard chdir(dir) != 0 else { return }
    let reason: String
    switch errno {
    case ENOENT: reason = "no such directory"
    case ENOTDIR: reason = "not a directory"
    case EACCES, EPERM: reason = "permission denied"
    default: reason = String(cString: strerror(errno))
    }
    printError("openshell-sandbox: workdir \(dir): \(reason)\n")
    exit(1)
  }

  /// Applies every step of the plan to the calling process (see the type's documentation).
  static func apply(_ plan: ConfinementPlan, seccomp: SeccompProgram) throws {
    if let path = plan.networkNamespacePath { try enterNetworkNamespace(path) }
    // A workload that exhausts the sandbox's memory is the OOM killer's first choice, never its supervisor:
    // every workload process raises its own score to the maximum (raising needs no privilege; lowering the
    // supervisor's instead is refused on some hosts, e.g. in containers).
    preferForOOMKill()
    let ruleset = try LandlockRuleset.prepare(plan)
    defer { ruleset?.close() }
    // Also without a user switch: a supervisor without root keeps capabilities of its user namespace
    // (its private network namespace), which must not reach the workload (only those present are dropped).
    try Privileges.clearBoundingSet()
    if let uid = plan.uid, let gid = plan.gid { try Privileges.switchUser(uid: uid, gid: gid, groups: plan.groups) }
    try Privileges.clearRemaining()
    try Privileges.verifyNone()
    try Privileges.harden()
    try ruleset?.restrictSelf()
    try seccomp.install()
  }

  /// Writes 1000 to `/proc/self/oom_score_adj` (best effort: without it the workload keeps the score it
  /// inherited, and the supervisor is no longer protected — nothing else depends on it).
  static func preferForOOMKill() {
    let fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return }
    _ = "1000\n".withCString { write(fd, $0, 5) }
    close(fd)
  }

  /// Replaces the launcher's environment (only `OPENSHELL_LAUNCH_ENV_FD`) with the workload's, read
  /// from that descriptor (`KEY=VALUE\0`…, to EOF), so that execvp searches the workload's `PATH` and
  /// passes its environment on. The supervisor never starts the launcher with the workload's environment:
  /// `LD_PRELOAD` and friends must not reach a process that runs as root (finding of a newcomer's attack).
  /// Without the variable the environment is left as it is (a launcher started by hand).
  /// - Throws: `Failure` when the descriptor cannot be read.
  static func adoptEnvironment() throws {
    guard let raw = getenv("OPENSHELL_LAUNCH_ENV_FD"), let fd = Int32(String(cString: raw)), fd >= 3 else { return }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
      let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if n > 0 { bytes += chunk[0..<n]; continue }
      if n < 0 && errno == EINTR { continue }
      if n < 0 { throw Failure("cannot read the workload environment (descriptor \(fd)): \(String(cString: strerror(errno)))") }
      break
    }
    close(fd)
    guard clearenv() == 0 else { throw Failure("cannot clear the environment") }
    for entry in bytes.split(separator: 0) {
      guard let eq = entry.firstIndex(of: UInt8(ascii: "=")), eq > entry.startIndex else { continue }
      let key = String(decoding: entry[entry.startIndex..<eq], as: UTF8.self)
      let value = String(decoding: entry[(eq + 1)...], as: UTF8.self)
      guard setenv(key, value, 1) == 0 else { throw Failure("cannot set \(key) in the environment") }
    }
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
