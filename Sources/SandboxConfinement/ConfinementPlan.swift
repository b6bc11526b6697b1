/// What the launcher applies to every workload process (main command, exec) before it execs it:
/// written by the gateway's driver into `launch.json` (`SupervisorLaunch.confinement`) from the
/// sandbox's effective policy at start, and handed by the supervisor to the launcher
/// (`openshell-sandbox-launch`, ``Launcher``) as command-line arguments (``launcherArguments``).
///
/// Startup-only (OpenShell: openshell-behavior.md §7, "static" sections): `filesystem_policy`,
/// `landlock` and `process` are read from the policy once, when the sandbox starts. A live update of
/// those sections is refused by the gateway; `sandbox stop` + `sandbox start` applies a new one. Because
/// the plan is part of the launch description, no workload can start before it is known (fail closed).
public struct ConfinementPlan: Codable, Sendable, Equatable {
  /// The sandbox's trust directory (the proxy's CA certificate and bundle), which the driver adds to
  /// every plan's `readOnly` beyond the policy's paths (OpenShell's baseline enrichment). It never
  /// counts as a policy path: a policy none of whose own paths opens is still refused.
  public static let trustDirectory = "/var/lib/openshell-tls"

  /// The workload user: name shown by `id`/`whoami` (the policy's `process.run_as_user`, always
  /// `sandbox`), host uid/gid and supplementary groups. nil uid/gid: the supervisor does not run as
  /// root (rootless gateway), so the workload keeps the supervisor's own (unprivileged) user.
  public var user: String
  /// Host uid the workload runs as; nil = keep the supervisor's own user (rootless gateway).
  public var uid: UInt32?
  /// Host gid the workload runs as; nil = keep the supervisor's own group.
  public var gid: UInt32?
  /// Supplementary group ids set before the exec (setgroups); empty = none.
  public var groups: [UInt32]
  /// Landlock path lists (`filesystem_policy`); `includeWorkdir` adds ``workdir`` read-write.
  public var readOnly: [String]
  /// Paths the workload may read and write (`filesystem_policy.read_write`), absolute.
  public var readWrite: [String]
  /// `filesystem_policy.include_workdir`: whether ``workdir`` is added to the read-write paths.
  public var includeWorkdir: Bool
  /// The sandbox's working directory (the workspace, `/sandbox`).
  public var workdir: String
  /// `landlock.compatibility`: `best_effort` (run without filesystem limits where the kernel has no
  /// Landlock, reported loudly) or `hard_requirement` (the sandbox fails).
  public var landlockCompatibility: String
  /// Test-only (documented): behave as on a kernel without Landlock. Set by the driver only when the
  /// gateway's environment has `OPENSHELL_TEST_DISABLE_LANDLOCK=1` (or a test configures it).
  public var simulateNoLandlock: Bool
  /// A network namespace to enter first (`setns(CLONE_NEWNET)`), provisioned by the network enforcement;
  /// nil: stay in the supervisor's network namespace.
  public var networkNamespacePath: String?

  /// A plan with every field given; `workdir` defaults to `/sandbox`.
  public init(
    user: String, uid: UInt32?, gid: UInt32?, groups: [UInt32], readOnly: [String], readWrite: [String],
    includeWorkdir: Bool, workdir: String = "/sandbox", landlockCompatibility: String, simulateNoLandlock: Bool = false,
    networkNamespacePath: String? = nil
  ) {
    self.user = user
    self.uid = uid
    self.gid = gid
    self.groups = groups
    self.readOnly = readOnly
    self.readWrite = readWrite
    self.includeWorkdir = includeWorkdir
    self.workdir = workdir
    self.landlockCompatibility = landlockCompatibility
    self.simulateNoLandlock = simulateNoLandlock
    self.networkNamespacePath = networkNamespacePath
  }

  /// The environment switch (gateway side) behind ``simulateNoLandlock``; only tests set it.
  public static let testDisableLandlockVariable = "OPENSHELL_TEST_DISABLE_LANDLOCK"
  /// Exit code of a workload whose confinement could not be applied (nothing was executed).
  public static let failureExitCode: Int32 = 126

  /// The plan as launcher options (everything before `--`): `--user NAME [--uid N --gid N]
  /// [--group N]… [--ro PATH]… [--rw PATH]… --workdir PATH [--include-workdir] --landlock MODE
  /// [--simulate-no-landlock] [--netns PATH]`. Every value is one argument, so any path survives.
  public var launcherArguments: [String] {
    var a = ["--user", user]
    if let uid, let gid { a += ["--uid", String(uid), "--gid", String(gid)] }
    for g in groups { a += ["--group", String(g)] }
    for p in readOnly { a += ["--ro", p] }
    for p in readWrite { a += ["--rw", p] }
    a += ["--workdir", workdir]
    if includeWorkdir { a.append("--include-workdir") }
    a += ["--landlock", landlockCompatibility]
    if simulateNoLandlock { a.append("--simulate-no-landlock") }
    if let networkNamespacePath { a += ["--netns", networkNamespacePath] }
    return a
  }

  /// Parses ``launcherArguments`` followed by `--` and the command.
  /// - Returns: the plan and the command (at least one word).
  /// - Throws: ``Launcher/Failure`` naming the bad option.
  public static func parse(_ args: ArraySlice<String>) throws -> (ConfinementPlan, [String]) {
    let request = try parseLaunch(args)
    return (request.plan, request.command)
  }

  /// Parses the launcher's whole command line: ``launcherArguments``, optionally `--seccomp-bpf HEX`
  /// (the compiled filter, ``SeccompProgram/hex``) and `--chdir DIR`, `--` and the command.
  /// - Returns: the plan, the seccomp program and working directory when given, and the command (at
  ///   least one word).
  /// - Throws: ``Launcher/Failure`` naming the bad option.
  public static func parseLaunch(_ args: ArraySlice<String>) throws -> LaunchRequest {
    var seccomp: SeccompProgram?
    var workingDirectory: String?
    var plan = ConfinementPlan(
      user: "", uid: nil, gid: nil, groups: [], readOnly: [], readWrite: [], includeWorkdir: false, workdir: "", landlockCompatibility: "")
    var i = args.startIndex
    func value(_ flag: String) throws -> String {
      i += 1
      guard i < args.endIndex else { throw Launcher.Failure("\(flag) needs a value") }
      return args[i]
    }
    func number(_ flag: String) throws -> UInt32 {
      let v = try value(flag)
      guard let n = UInt32(v) else { throw Launcher.Failure("\(flag) expects a number, got '\(v)'") }
      return n
    }
    while i < args.endIndex, args[i] != "--" {
      let flag = args[i]
      switch flag {
      case "--user": plan.user = try value(flag)
      case "--uid": plan.uid = try number(flag)
      case "--gid": plan.gid = try number(flag)
      case "--group": plan.groups.append(try number(flag))
      case "--ro": plan.readOnly.append(try value(flag))
      case "--rw": plan.readWrite.append(try value(flag))
      case "--workdir": plan.workdir = try value(flag)
      case "--include-workdir": plan.includeWorkdir = true
      case "--landlock": plan.landlockCompatibility = try value(flag)
      case "--simulate-no-landlock": plan.simulateNoLandlock = true
      case "--netns": plan.networkNamespacePath = try value(flag)
      case "--seccomp-bpf": seccomp = try SeccompProgram(hex: try value(flag))
      case "--chdir":
        let dir = try value(flag)
        guard dir.hasPrefix("/") else { throw Launcher.Failure("--chdir expects an absolute path, got '\(dir)'") }
        workingDirectory = dir
      default: throw Launcher.Failure("unknown option '\(flag)'")
      }
      i += 1
    }
    guard i < args.endIndex, i + 1 < args.endIndex else { throw Launcher.Failure("no command after '--'") }
    guard (plan.uid == nil) == (plan.gid == nil) else { throw Launcher.Failure("--uid and --gid go together") }
    guard ["best_effort", "hard_requirement"].contains(plan.landlockCompatibility) else {
      throw Launcher.Failure("--landlock must be best_effort or hard_requirement, got '\(plan.landlockCompatibility)'")
    }
    return LaunchRequest(plan: plan, seccomp: seccomp, workingDirectory: workingDirectory, command: Array(args[(i + 1)...]))
  }
}

/// The launcher's command line, parsed (``ConfinementPlan/parseLaunch(_:)``).
public struct LaunchRequest {
  /// The confinement applied before the command runs.
  public var plan: ConfinementPlan
  /// The compiled seccomp filter (`--seccomp-bpf`); nil when not given (the launcher then refuses to run).
  public var seccomp: SeccompProgram?
  /// `--chdir DIR`: the command's working directory, entered after the confinement (as the workload user,
  /// under Landlock), as OpenShell's `cd <workdir> && …`; nil: the directory the launcher was started in.
  public var workingDirectory: String?
  /// The command and its arguments (at least one word).
  public var command: [String]
}
