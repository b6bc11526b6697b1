import CConfine

#if canImport(Glibc)
  import Glibc
#endif

/// The Landlock ruleset of a workload process (launcher steps 2 and 6), from the plan's
/// `filesystem_policy` (OpenShell: enforcement-and-ssh.md §1.4, "Filesystem").
///
/// - Handled rights: every filesystem right of the kernel's ABI (probed; 13 rights in ABI 1, REFER from
///   ABI 2, TRUNCATE from 3, IOCTL_DEV from 5), so anything not granted is denied.
/// - `read_only` paths get EXECUTE | READ_FILE | READ_DIR; `read_write` paths (plus the workdir when
///   `include_workdir`) get every handled right. On a path that is not a directory the rights are trimmed
///   to the file rights (EXECUTE, WRITE_FILE, READ_FILE, TRUNCATE, IOCTL_DEV), as the kernel requires.
/// - Paths that do not exist (or cannot be opened) are skipped; when no path at all could be opened the
///   ruleset would deny everything silently, so that is an error ("never allow everything", nor
///   "nothing by accident").
/// - No Landlock in the kernel: `best_effort` → no ruleset (the driver has recorded the high-severity
///   condition and the supervisor logged it); `hard_requirement` → an error naming the kernel.
public struct LandlockRuleset {
  static let execute: UInt64 = 1 << 0, writeFile: UInt64 = 1 << 1, readFile: UInt64 = 1 << 2, readDir: UInt64 = 1 << 3
  static let truncate: UInt64 = 1 << 14, ioctlDev: UInt64 = 1 << 15
  static let read = execute | readFile | readDir
  static let fileRights = execute | writeFile | readFile | truncate | ioctlDev

  /// Every filesystem right the given ABI knows.
  static func handledAccess(abi: Int32) -> UInt64 {
    var bits: UInt64 = (1 << 13) - 1  // ABI 1: EXECUTE … MAKE_SYM
    if abi >= 2 { bits |= 1 << 13 }  // REFER
    if abi >= 3 { bits |= truncate }
    if abi >= 5 { bits |= ioctlDev }
    return bits
  }

  /// Every path and the rights it gets, in plan order (read_only, then read_write, then the workdir).
  public static func rules(_ plan: ConfinementPlan) -> [(path: String, writable: Bool)] {
    var out = plan.readOnly.map { ($0, false) } + plan.readWrite.map { ($0, true) }
    if plan.includeWorkdir { out.append((plan.workdir, true)) }
    return out
  }

  let ruleset: Int32
  let abi: Int32

  /// Creates the ruleset and adds a rule per path that opens (descriptors opened now, while privileged).
  /// - Returns: nil when the kernel has no Landlock and the plan is `best_effort`.
  /// - Throws: no Landlock with `hard_requirement`; no path could be opened; a kernel refusal.
  static func prepare(_ plan: ConfinementPlan) throws -> LandlockRuleset? {
    let abi: Int32
    switch LandlockProbe.probe(simulateAbsent: plan.simulateNoLandlock) {
    case .available(let v): abi = v
    case .unavailable(let reason, let kernel):
      if plan.landlockCompatibility == "hard_requirement" {
        throw Launcher.Failure("landlock.compatibility is hard_requirement but kernel \(kernel) offers no Landlock: \(reason)")
      }
      return nil
    }
    let handled = handledAccess(abi: abi)
    let fd = cconfine_landlock_create_ruleset(handled)
    guard fd >= 0 else { throw Launcher.Failure("landlock_create_ruleset: \(String(cString: strerror(-fd)))") }
    var added = 0
    for (path, writable) in rules(plan) {
      let pathFD = cconfine_open_path(path)
      guard pathFD >= 0 else { continue }
      defer { Glibc.close(pathFD) }
      var st = stat()
      guard fstat(pathFD, &st) == 0 else { continue }
      var access = writable ? handled : read & handled
      if (st.st_mode & S_IFMT) != S_IFDIR { access &= fileRights }
      let r = cconfine_landlock_add_path_rule(fd, pathFD, access)
      guard r == 0 else {
        Glibc.close(fd)
        throw Launcher.Failure("landlock_add_rule(\(path)): \(String(cString: strerror(-r)))")
      }
      if path != ConfinementPlan.trustDirectory { added += 1 }
    }
    guard added > 0 else {
      Glibc.close(fd)
      throw Launcher.Failure("no filesystem_policy path could be opened; an empty Landlock ruleset is refused")
    }
    return LandlockRuleset(ruleset: fd, abi: abi)
  }

  /// Restricts the calling thread (and what it executes); needs no_new_privs.
  func restrictSelf() throws {
    let r = cconfine_landlock_restrict_self(ruleset)
    guard r == 0 else { throw Launcher.Failure("landlock_restrict_self: \(String(cString: strerror(-r)))") }
  }

  func close() { Glibc.close(ruleset) }
}
