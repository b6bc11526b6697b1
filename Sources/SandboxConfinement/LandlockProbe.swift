import CConfine

#if canImport(Glibc)
  import Glibc
#endif

/// Whether this kernel offers Landlock, and which ABI: asked with the raw
/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)` (syscall 444), as OpenShell does
/// (enforcement-and-ssh.md §1.4, "Filesystem"). Used by the gateway's driver (to refuse a
/// `hard_requirement` sandbox and to report the effective confinement) and by the supervisor's
/// launcher (which applies it).
public enum LandlockProbe {
  /// The outcome of ``probe(simulateAbsent:)``.
  public enum Status: Sendable, Equatable {
    /// The kernel's Landlock ABI version (≥ 1).
    case available(abi: Int32)
    /// No Landlock: why (errno text, or the test switch) and the kernel release.
    case unavailable(reason: String, kernel: String)
  }

  /// - Parameter simulateAbsent: the documented test switch (``ConfinementPlan/simulateNoLandlock``):
  ///   answer as a kernel without Landlock would.
  public static func probe(simulateAbsent: Bool = false) -> Status {
    if simulateAbsent {
      return .unavailable(reason: "Landlock disabled by the test switch \(ConfinementPlan.testDisableLandlockVariable)=1", kernel: kernelRelease())
    }
    let r = cconfine_landlock_abi()
    if r >= 1 { return .available(abi: r) }
    let why: String
    switch -r {
    case ENOSYS: why = "the kernel has no Landlock support (ENOSYS)"
    case EOPNOTSUPP: why = "Landlock is disabled at boot (EOPNOTSUPP; add landlock to the lsm= kernel parameter)"
    case EPERM: why = "the landlock syscalls are blocked (EPERM; a container seccomp profile?)"
    default: why = "landlock_create_ruleset failed: \(String(cString: strerror(-r)))"
    }
    return .unavailable(reason: why, kernel: kernelRelease())
  }

  /// `uname -r`.
  public static func kernelRelease() -> String {
    var u = utsname()
    guard uname(&u) == 0 else { return "unknown" }
    return withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
  }
}
