/// What the launcher applies to every workload process (main command, exec) before it execs it:
/// written by the gateway's driver into `launch.json` (``SupervisorLaunch/confinement``) from the
/// sandbox's effective policy at start, and handed by the supervisor to its launcher mode
/// (`openshell-sandbox --confine <plan JSON> -- COMMAND…`).
///
/// Startup-only (OpenShell: openshell-behavior.md §7, "static" sections): `filesystem_policy`,
/// `landlock` and `process` are read from the policy once, when the sandbox starts. A live update of
/// those sections is refused by the gateway; `sandbox stop` + `sandbox start` applies a new one. Because
/// the plan is part of the launch description, no workload can start before it is known (fail closed).
///
/// The order of the steps follows OpenShell (enforcement-and-ssh.md §1.4, "Child setup order").
public struct ConfinementPlan: Codable, Sendable, Equatable {
  /// The workload user: name shown by `id`/`whoami` (the policy's `process.run_as_user`, always
  /// `sandbox`), host uid/gid and supplementary groups. nil uid/gid: the supervisor does not run as
  /// root (rootless gateway), so the workload keeps the supervisor's own (unprivileged) user.
  public var user: String
  public var uid: UInt32?
  public var gid: UInt32?
  public var groups: [UInt32]
  /// Landlock path lists (`filesystem_policy`); `includeWorkdir` adds the workspace (`/sandbox`) read-write.
  public var readOnly: [String]
  public var readWrite: [String]
  public var includeWorkdir: Bool
  /// `landlock.compatibility`: `best_effort` (run without filesystem limits where the kernel has no
  /// Landlock, reported loudly) or `hard_requirement` (the sandbox fails).
  public var landlockCompatibility: String
  /// Test-only (documented): behave as on a kernel without Landlock. Set by the driver only when the
  /// gateway's environment has `OPENSHELL_TEST_DISABLE_LANDLOCK=1`.
  public var simulateNoLandlock: Bool
  /// A network namespace to enter first (`setns(CLONE_NEWNET)`), provisioned by the network enforcement;
  /// nil: stay in the supervisor's network namespace.
  public var networkNamespacePath: String?

  public init(
    user: String, uid: UInt32?, gid: UInt32?, groups: [UInt32], readOnly: [String], readWrite: [String],
    includeWorkdir: Bool, landlockCompatibility: String, simulateNoLandlock: Bool = false, networkNamespacePath: String? = nil
  ) {
    self.user = user
    self.uid = uid
    self.gid = gid
    self.groups = groups
    self.readOnly = readOnly
    self.readWrite = readWrite
    self.includeWorkdir = includeWorkdir
    self.landlockCompatibility = landlockCompatibility
    self.simulateNoLandlock = simulateNoLandlock
    self.networkNamespacePath = networkNamespacePath
  }

  /// The environment switch (gateway side) behind ``simulateNoLandlock``; only tests set it.
  public static let testDisableLandlockVariable = "OPENSHELL_TEST_DISABLE_LANDLOCK"
  /// The supervisor's argument that selects launcher mode.
  public static let launcherFlag = "--confine"
  /// Exit code of a workload whose confinement could not be applied (nothing was executed).
  public static let failureExitCode: Int32 = 126
}
