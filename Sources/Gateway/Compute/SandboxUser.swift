import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The host identity behind the sandbox user `sandbox` (the policy's `process.run_as_user` /
/// `run_as_group`, which the gateway only accepts as `sandbox`: openshell-behavior.md §7).
///
/// Mechanism (local driver):
/// - gateway running as root: a host user named `sandbox` when one exists (its uid and primary gid),
///   else the fixed uid/gid ``fixedID`` (10001), which must not belong to another host user or group —
///   the start fails loudly rather than share an identity with a real account (``resolve()``); the
///   launcher switches every workload process to it;
/// - gateway not root (``rootless()``): bubblewrap's unprivileged user namespace maps exactly one uid and
///   gid, the gateway's own, and every process of the sandbox has them; that identity is named `sandbox`
///   inside, so the name the workload sees (`whoami`, `$USER`) is the one it logs in as over SSH
///   (issue 11: sshd refused `sandbox`, a name the host's `/etc/passwd` did not have);
/// - inside the sandbox, `/etc/passwd` and `/etc/group` are replaced (read-only bind mounts) by the
///   files ``passwd`` and ``group`` generate, so `id`, `whoami`, git, python and sshd resolve the name;
///   the home directory is the workspace `/sandbox`, owned by that user. The password field is empty:
///   the sandbox's SSH server accepts the `none` method, as OpenShell's does (the gateway's session
///   token is the credential; Supervisor `SSHServer`).
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

  /// The identity of a sandbox of a gateway that is not root: the gateway's own uid and gid, which
  /// bubblewrap's `--unshare-user` maps to themselves (no `--uid`/`--gid`), the only ones that exist there.
  static func rootless() -> SandboxUser { SandboxUser(uid: getuid(), gid: getgid()) }

  /// The overflow id: what unmapped ids (the host's root among them) are shown as in a user namespace.
  static let nobodyID: UInt32 = 65534

  /// `/etc/passwd` inside the sandbox: root, the sandbox user (home `/sandbox`, no password: see the
  /// type's documentation), nobody. One name per uid: a gateway running as nobody (65534) leaves `nobody`
  /// out, so that uid is named `sandbox` only.
  var passwd: String {
    var lines = ["root:x:0:0:root:/root:/usr/sbin/nologin", "\(Self.name)::\(uid):\(gid):OpenShell sandbox:/sandbox:/bin/sh"]
    if uid != Self.nobodyID { lines.append("nobody:x:\(Self.nobodyID):\(Self.nobodyID):nobody:/nonexistent:/usr/sbin/nologin") }
    return lines.joined(separator: "\n") + "\n"
  }

  /// `/etc/group` inside the sandbox (`nogroup` left out when the sandbox's gid is 65534).
  var group: String {
    var lines = ["root:x:0:", "\(Self.name):x:\(gid):"]
    if gid != Self.nobodyID { lines.append("nogroup:x:\(Self.nobodyID):") }
    return lines.joined(separator: "\n") + "\n"
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
