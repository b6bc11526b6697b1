#if canImport(Glibc)
  import Glibc
#endif

/// `openshell-sandbox-launch --ssh-session <plan options>`: the sandbox SSH server's `ForceCommand`.
///
/// The SSH server (`sshd -i`, a workload process) needs read access to its host key; its sessions
/// would inherit that access (a login shell could copy the key). Every session therefore starts here
/// first: the launcher, already running as the sandbox user inside the SSH server's confinement, adds
/// one more Landlock layer — the workloads' own paths plus the terminal devices, *without* the host
/// key — sets no_new_privs (already set), checks that it holds no capability, and then executes what
/// the client asked for: `$SHELL -c "$SSH_ORIGINAL_COMMAND"` (commands, `scp`, `rsync`, the `sftp`
/// subsystem, whose path sshd passes the same way) or a login shell (`-sh`). Landlock layers only ever
/// narrow, and a process in the inner layer cannot ptrace or read the memory of sshd (outer layer;
/// seccomp refuses ptrace and process_vm_readv besides), so nothing a session runs can read the key.
///
/// The plan options must not name a user or a network namespace (the session is already both);
/// `--seccomp-bpf` is not needed (the filter is inherited from the SSH server's start).
/// Fail closed: nothing is executed when a step fails (exit 126, one line on stderr).
extension Launcher {
  /// The first argument that selects this mode.
  public static let sshSessionFlag = "--ssh-session"

  static func sshSession(_ options: ArraySlice<String>) -> Never {
    let request: LaunchRequest
    do { request = try ConfinementPlan.parseLaunch((Array(options) + ["--", "sh"])[...]) } catch {
      fail("\(error) (usage: openshell-sandbox-launch --ssh-session <plan options>)")
    }
    let plan = request.plan
    guard plan.uid == nil, plan.gid == nil, plan.networkNamespacePath == nil, request.workingDirectory == nil else {
      fail("--ssh-session narrows an already confined session: no --uid, --gid, --netns or --chdir")
    }
    do {
      let ruleset = try LandlockRuleset.prepare(plan)
      defer { ruleset?.close() }
      try Privileges.clearRemaining()
      try Privileges.verifyNone()
      try Privileges.harden()
      try ruleset?.restrictSelf()
    } catch {
      fail("\(error)")
    }
    var shell = "/bin/sh"
    if let raw = getenv("SHELL"), raw.pointee == UInt8(ascii: "/") { shell = String(cString: raw) }
    if let command = getenv("SSH_ORIGINAL_COMMAND") { execute([shell, "-c", String(cString: command)]) }
    // A login shell, as sshd starts one: argv[0] is "-" and the shell's name.
    let name = "-" + (shell.split(separator: "/").last.map(String.init) ?? "sh")
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup(name), nil]
    execv(shell, argv)
    let e = errno
    printError("openshell-sandbox: \(shell): \(String(cString: strerror(e)))\n")
    exit(e == ENOENT ? 127 : 126)
  }
}
