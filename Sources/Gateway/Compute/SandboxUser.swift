import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The host identity behind the sandbox user `sandbox` (the policy's `process.run_as_user` /
/// `run_as_group`, which the gateway only accepts as `sandbox`: openshell-behavior.md §7).
///
/// Mechanism (local driver, gateway running as root):
/// - a host user named `sandbox` when one exists (its uid and primary gid), else the fixed uid/gid
///   ``fixedID`` (10001), which must not belong to another host user or group — the start fails
///   loudly rather than share an identity with a real account;
/// - inside the sandbox, `/etc/passwd` and `/etc/group` are replaced (read-only bind mounts) by the
///   files ``passwd`` and ``group`` generate, so `id`, `whoami`, git and python resolve the name; the
///   home directory is the workspace `/sandbox`, owned by that user.
/// The workload never runs as root: the gateway accepts no other `run_as_user`, and the launcher
/// (`SandboxConfinement/Launcher.swift`) verifies that uid 0 cannot be regained.
struct SandboxUser: Equatable {
  static let name = "sandbox"
  static let fixedID: UInt32 = 10001

  let uid: UInt32
  let gid: UInt32

  /// Resolves the host identity.
  /// - Throws: when no `sandbox` host user exists and ``fixedID`` belongs to someone else.
  static func resolve() throws -> SandboxUser {
    if let pw = getpwnam(name) { return SandboxUser(uid: pw.pointee.pw_uid, gid: pw.pointee.pw_gid) }
    if let pw = getpwuid(fixedID) {
      throw SandboxUserError(
        "uid \(fixedID) belongs to host user '\(String(cString: pw.pointee.pw_name))'; create a host user named '\(name)' to choose the sandbox identity")
    }
    if let gr = getgrgid(fixedID) {
      throw SandboxUserError(
        "gid \(fixedID) belongs to host group '\(String(cString: gr.pointee.gr_name))'; create a host user named '\(name)' to choose the sandbox identity")
    }
    return SandboxUser(uid: fixedID, gid: fixedID)
  }

  /// `/etc/passwd` inside the sandbox: root, the sandbox user (home `/sandbox`), nobody.
  var passwd: String {
    """
    root:x:0:0:root:/root:/usr/sbin/nologin
    \(Self.name):x:\(uid):\(gid):OpenShell sandbox:/sandbox:/bin/sh
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin

    """
  }

  /// `/etc/group` inside the sandbox.
  var group: String {
    """
    root:x:0:
    \(Self.name):x:\(gid):
    nogroup:x:65534:

    """
  }

  /// Makes `uid:gid` own the workspace; when it belonged to another identity (an older gateway used
  /// 65534, or the host `sandbox` user changed), everything in it is re-owned.
  func own(workspace: String) {
    var st = stat()
    guard lstat(workspace, &st) == 0, st.st_uid != uid || st.st_gid != gid else { return }
    _ = lchown(workspace, uid, gid)
    guard let walker = FileManager.default.enumerator(atPath: workspace) else { return }
    for case let rel as String in walker { _ = lchown(workspace + "/" + rel, uid, gid) }
  }
}

struct SandboxUserError: Error, CustomStringConvertible {
  let description: String
  init(_ d: String) { description = d }
}
