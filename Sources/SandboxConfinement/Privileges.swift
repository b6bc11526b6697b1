import CConfine

#if canImport(Glibc)
  import Glibc
#endif

/// Privilege drop and process hardening for a workload process (launcher steps 3–5; OpenShell:
/// enforcement-and-ssh.md §1.4, "Child setup order": the bounding set is cleared fail-closed with
/// CAP_SETPCAP, then `setgroups`/`setgid`/`setuid`, then `PR_SET_DUMPABLE` 0 and no core dumps).
///
/// Note: `execve` resets the dumpable flag to 1 for an ordinary (non-set-id) program, as Linux does;
/// `PR_SET_DUMPABLE` 0 protects the launcher itself. Another process of the workload user cannot
/// ptrace the workload anyway: `ptrace` is refused by the seccomp filter.
enum Privileges {
  // prctl(2) options (linux/prctl.h).
  static let capbsetRead: Int32 = 23, capbsetDrop: Int32 = 24, setNoNewPrivs: Int32 = 38, setDumpable: Int32 = 4
  static let getNoNewPrivs: Int32 = 39, capAmbient: Int32 = 47, ambientIsSet: UInt = 1, ambientClearAll: UInt = 4

  /// Capability numbers the kernel knows (0 … cap_last_cap), probed once per launcher: a binary search
  /// for the first number `PR_CAPBSET_READ` calls invalid (6 calls instead of one per capability).
  static let knownCapabilities: [UInt] = {
    var (low, high): (UInt, UInt) = (0, 64)  // invariant: low is known, high is not (or 64)
    guard cconfine_prctl(capbsetRead, 0, 0, 0, 0) != -EINVAL else { return [] }
    while high - low > 1 {
      let mid = (low + high) / 2
      if cconfine_prctl(capbsetRead, mid, 0, 0, 0) == -EINVAL { high = mid } else { low = mid }
    }
    return Array(0...low)
  }()

  /// Drops every capability from the bounding set (needs CAP_SETPCAP).
  /// - Throws: when one stays (the spawn is aborted).
  static func clearBoundingSet() throws {
    for cap in knownCapabilities where cconfine_prctl(capbsetRead, cap, 0, 0, 0) == 1 {
      let r = cconfine_prctl(capbsetDrop, cap, 0, 0, 0)
      if r < 0 {
        throw Launcher.Failure("cannot drop capability \(cap) from the bounding set: \(String(cString: strerror(-r))) (the supervisor needs CAP_SETPCAP)")
      }
    }
  }

  /// Supplementary groups, then gid, then uid (real, effective and saved: we are root here).
  static func switchUser(uid: UInt32, gid: UInt32, groups: [UInt32]) throws {
    let list = groups.isEmpty ? [gid] : groups
    guard setgroups(list.count, list) == 0 else { throw Launcher.Failure("setgroups: \(String(cString: strerror(errno)))") }
    guard setgid(gid) == 0 else { throw Launcher.Failure("setgid(\(gid)): \(String(cString: strerror(errno)))") }
    guard setuid(uid) == 0 else { throw Launcher.Failure("setuid(\(uid)): \(String(cString: strerror(errno)))") }
    guard getuid() == uid, geteuid() == uid, getgid() == gid, getegid() == gid else {
      throw Launcher.Failure("the user switch to \(uid):\(gid) did not take effect")
    }
    // A process that could become root again is not confined.
    if uid != 0, setuid(0) == 0 { throw Launcher.Failure("uid 0 could be regained after dropping to \(uid)") }
  }

  /// Clears the ambient set and the inheritable, permitted and effective sets (a non-root setuid
  /// clears permitted/effective/ambient but not inheritable).
  static func clearRemaining() throws {
    let a = cconfine_prctl(capAmbient, ambientClearAll, 0, 0, 0)
    if a < 0 && a != -EINVAL { throw Launcher.Failure("cannot clear the ambient capabilities: \(String(cString: strerror(-a)))") }
    let r = cconfine_capset_clear()
    if r < 0 { throw Launcher.Failure("cannot clear the capability sets: \(String(cString: strerror(-r)))") }
  }

  /// Verifies that the bounding, effective, permitted, inheritable and ambient sets are all empty.
  static func verifyNone() throws {
    var e: UInt64 = 0
    var p: UInt64 = 0
    var i: UInt64 = 0
    let r = cconfine_capget(&e, &p, &i)
    guard r == 0 else { throw Launcher.Failure("capget: \(String(cString: strerror(-r)))") }
    guard e == 0, p == 0, i == 0 else {
      throw Launcher.Failure("capabilities remain (effective \(String(e, radix: 16)), permitted \(String(p, radix: 16)), inheritable \(String(i, radix: 16)))")
    }
    for cap in knownCapabilities {
      if cconfine_prctl(capbsetRead, cap, 0, 0, 0) != 0 { throw Launcher.Failure("capability \(cap) remains in the bounding set") }
      if cconfine_prctl(capAmbient, ambientIsSet, cap, 0, 0) == 1 { throw Launcher.Failure("capability \(cap) remains ambient") }
    }
  }

  /// `PR_SET_NO_NEW_PRIVS` 1 (verified), `PR_SET_DUMPABLE` 0, `RLIMIT_CORE` 0.
  static func harden() throws {
    var r = cconfine_prctl(setNoNewPrivs, 1, 0, 0, 0)
    guard r == 0, cconfine_prctl(getNoNewPrivs, 0, 0, 0, 0) == 1 else {
      throw Launcher.Failure("PR_SET_NO_NEW_PRIVS: \(String(cString: strerror(-r)))")
    }
    r = cconfine_prctl(setDumpable, 0, 0, 0, 0)
    guard r == 0 else { throw Launcher.Failure("PR_SET_DUMPABLE: \(String(cString: strerror(-r)))") }
    var limit = rlimit(rlim_cur: 0, rlim_max: 0)
    guard setrlimit(__rlimit_resource_t(RLIMIT_CORE.rawValue), &limit) == 0 else {
      throw Launcher.Failure("RLIMIT_CORE: \(String(cString: strerror(errno)))")
    }
  }
}
