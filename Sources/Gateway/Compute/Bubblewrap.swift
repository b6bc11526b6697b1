import Foundation
import SandboxProtocol

/// How one sandbox is isolated by the local driver: the `bwrap` (Debian package `bubblewrap`) command
/// line that starts the supervisor.
///
/// - New mount, PID, UTS, IPC (and, where allowed, cgroup) namespaces; the root is an empty tmpfs.
/// - Host system directories read-only: `/usr`, `/etc` (its entries, under a private `/etc`, when the
///   sandbox has its own identity files: ``privateEtc(_:hostEtc:)``) and the top-level `/bin`, `/sbin`, `/lib*`
///   (re-created as the same symlinks when they are symlinks, as on merged-/usr Debian). No Swift runtime
///   directory: the supervisor and the launcher are static executables.
/// - Fresh `/proc`, a minimal `/dev`, private tmpfs `/tmp` and `/var/tmp` (mode 1777).
/// - The private writable workspace at `/sandbox`; the sandbox's credentials read-only at
///   `/run/openshell`; the supervisor binary read-only at `/opt/openshell/bin/openshell-sandbox`, the
///   launcher next to it (`openshell-sandbox-launch`).
/// - Its own hostname (the sandbox name).
/// - Users: when the gateway runs as root, the supervisor runs as root inside the namespaces with only
///   ``supervisorCapabilities`` (everything else dropped). It starts every workload process (main
///   command, exec) through the launcher, which enters the sandbox's network namespace, switches to the
///   `sandbox` user (``SandboxUser``: `/etc/passwd` and `/etc/group` are replaced by ``identityFiles``),
///   clears every capability, sets no_new_privs and applies Landlock and seccomp
///   (`SandboxConfinement/Launcher.swift`). The workspace is owned by `sandbox`; the sandbox key (0600
///   root) is unreadable to the workload. When the gateway is not root, bwrap uses an unprivileged user
///   namespace that maps only the gateway's own uid/gid, there is no user switch, the generated identity
///   files name that uid `sandbox` (``SandboxUser/rootless()``: the same login name as with root, which
///   sshd needs), and the launcher still applies no_new_privs, Landlock and seccomp (it refuses to run a
///   workload if a capability remains).
///
/// Network (without root: ``Network/private``, the supervisor makes the namespace itself and keeps
/// ``privateNetworkCapabilities`` of bubblewrap's user namespace, none of the host's). With root: the supervisor itself stays in the host network namespace (it dials the gateway on
/// loopback and runs the sandbox's policy proxy on the host side of the veth pair); with
/// ``Network/confined(namespaceFile:)`` the sandbox's own network namespace (``SandboxNetworks``) is
/// bind-mounted read-only at `SandboxProtocol.networkNamespaceMount`, and the launcher enters it for
/// every workload process before dropping privileges. For that the supervisor keeps
/// ``networkCapabilities``: CAP_SYS_ADMIN (setns), CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (listing
/// `/proc/<pid>/fd` of the workload user and reading `/proc/<pid>/exe` of the non-dumpable workload
/// processes, to identify which binary opened a proxy connection).
struct BubblewrapCommand {
  enum Network {
    /// No network confinement (only used where the driver was told it may not confine: never by default).
    case host
    /// The sandbox's named network namespace (its nsfs file, e.g. `/run/netns/openshell-<id>-<tag>`).
    case confined(namespaceFile: String)
    /// A gateway without root: the supervisor creates the sandbox's namespace itself (Supervisor
    /// `PrivateNetwork`) with ``privateNetworkCapabilities`` of bubblewrap's user namespace.
    case `private`
  }

  /// Capabilities the supervisor keeps when the gateway runs as root — the one list to extend:
  /// SETUID/SETGID (the launcher's user switch), KILL (workload process groups of another uid),
  /// SETPCAP (the launcher clears the bounding set before executing a workload).
  static let supervisorCapabilities = ["CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_SETPCAP"]
  /// Added with network confinement: SYS_ADMIN (the launcher's setns), SYS_PTRACE and DAC_READ_SEARCH
  /// (the proxy's caller identification through `/proc/<pid>/{fd,exe}`).
  static let networkCapabilities = ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]

  /// Capabilities of bubblewrap's user namespace (none on the host) the supervisor gets without root,
  /// for ``Network/private``: SYS_ADMIN and NET_ADMIN (unshare CLONE_NEWNET, `lo` up; the launcher's
  /// setns), SYS_PTRACE (the launcher opens the non-dumpable supervisor's `/proc/<pid>/task/<tid>/ns/net`;
  /// the proxy reads workloads' `/proc/<pid>/{fd,exe}`), SETPCAP (the launcher clears the bounding set
  /// before a workload runs; it verifies that no capability remains).
  static let privateNetworkCapabilities = ["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SETPCAP"]

  var bwrapPath = "/usr/bin/bwrap"
  var hostname: String
  var workspace: String
  var credentials: String
  var supervisorBinary: String
  /// `openshell-sandbox-launch` (host path), mounted read-only at `SandboxProtocol.launcherPath`.
  var launcherBinary: String
  var runAsRoot: Bool
  /// Generated `/etc/passwd` and `/etc/group` (host paths) mounted read-only over the host's.
  var identityFiles: (passwd: String, group: String)?
  /// The sandbox's `/etc` overlay (``SandboxEtcView``, host path) and the host's mount points under `/etc`
  /// to bind over it; when set, it replaces ``privateEtc(_:hostEtc:)``'s entry-by-entry binds.
  var etcView: (path: String, submounts: [String])?
  var network: Network = .host
  /// The sandbox's trust directory (host path), bound writable at `SandboxProtocol.trustDirectory`: the
  /// supervisor writes its CA certificate there (root-owned 0755 on the host, so the workload user
  /// only reads it). nil: not mounted.
  var trustDirectory: String?

  var arguments: [String] {
    var a = ["--unshare-pid", "--unshare-uts", "--unshare-ipc", "--unshare-cgroup-try", "--new-session"]
    if !runAsRoot { a += ["--unshare-user"] }
    var networkMount: [String] = []
    switch network {
    case .host, .private: break
    case .confined(let file): networkMount = ["--ro-bind", file, SandboxProtocol.networkNamespaceMount]
    }
    a += ["--hostname", hostname]
    let fm = FileManager.default
    for top in ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"] + (identityFiles == nil ? ["etc"] : []) {
      let path = "/" + top
      if let target = try? fm.destinationOfSymbolicLink(atPath: path) {
        a += ["--symlink", target, path]
      } else if fm.fileExists(atPath: path) {
        a += ["--ro-bind", path, path]
      }
    }
    if let etcView {
      a += ["--ro-bind", etcView.path, "/etc"]
      for point in etcView.submounts { a += ["--ro-bind-try", point, point] }
    } else if let identityFiles {
      a += Self.privateEtc(identityFiles)
    }
    // Searchable, not listable (0711): SSH sessions run the launcher as the sandbox user (its
    // `--ssh-session` mode, the SSH server's ForceCommand); bwrap would create these 0700
    // (before anything else creates /opt).
    for dir in ["/opt", "/opt/openshell", "/opt/openshell/bin"] { a += ["--perms", "0711", "--dir", dir] }
    a += ["--proc", "/proc", "--dev", "/dev"]
    a += ["--perms", "1777", "--tmpfs", "/tmp", "--dir", "/var", "--perms", "1777", "--tmpfs", "/var/tmp"]
    a += ["--bind", workspace, SandboxProtocol.workspace]
    // /run is searchable but not listable (0711) so that the sandbox's SSH server, which runs as the
    // sandbox user, can open its host key in the credentials directory; Landlock keeps every other
    // workload process out of /run/openshell (issue 11).
    a += ["--perms", "0711", "--dir", "/run"]
    a += ["--ro-bind", credentials, SandboxProtocol.credentialsDirectory]
    a += ["--ro-bind", supervisorBinary, SandboxProtocol.supervisorPath]
    a += ["--ro-bind", launcherBinary, SandboxProtocol.launcherPath]
    a += networkMount
    if let trustDirectory {
      // Created explicitly 0755 (directories bwrap creates on its own are 0700: the workload user
      // could not reach the files).
      a += ["--perms", "0755", "--dir", (SandboxProtocol.trustDirectory as NSString).deletingLastPathComponent]
      a += ["--bind", trustDirectory, SandboxProtocol.trustDirectory]
    }
    if runAsRoot {
      a += ["--cap-drop", "ALL"] + Self.supervisorCapabilities.flatMap { ["--cap-add", $0] }
      if case .confined = network { a += Self.networkCapabilities.flatMap { ["--cap-add", $0] } }
    } else if case .private = network {
      a += Self.privateNetworkCapabilities.flatMap { ["--cap-add", $0] }
    }
    a += ["--chdir", SandboxProtocol.workspace, "--info-fd", "3", "--", SandboxProtocol.supervisorPath]
    return a
  }

  /// Host files in `/etc` that a sandbox with its own identity files never sees: its `passwd`/`group`
  /// are generated, and the host's account databases (and their backups) are nobody's business inside.
  static let hiddenEtcEntries: Set<String> = [
    "passwd", "group", "passwd-", "group-", "shadow", "shadow-", "gshadow", "gshadow-", "subuid", "subuid-",
    "subgid", "subgid-", ".pwd.lock",
  ]

  /// `/etc` for a sandbox with generated identity files: a tmpfs holding one read-only bind mount (or
  /// the same symlink) per host entry, the generated `passwd` and `group`, then made read-only.
  ///
  /// Why not `--ro-bind /etc /etc` with the two files bound over it: a file bind mount sits on the
  /// host's dentry, and when the host replaces `/etc/passwd` by rename (`useradd`, `passwd`, `vipw` all
  /// do) the kernel detaches mounts on the old dentry in every namespace — the running sandbox would then
  /// read the host's account database and lose its `sandbox` user (no `whoami`, no SSH login). Here the
  /// mount points live on the sandbox's own tmpfs, so a host change leaves the sandbox's view as it was.
  /// Host entries created after the start are not visible.
  static func privateEtc(_ identityFiles: (passwd: String, group: String), hostEtc: String = "/etc") -> [String] {
    let fm = FileManager.default
    var a = ["--perms", "0755", "--tmpfs", "/etc"]
    for entry in ((try? fm.contentsOfDirectory(atPath: hostEtc)) ?? []).sorted() where !hiddenEtcEntries.contains(entry) {
      let path = hostEtc + "/" + entry
      if let target = try? fm.destinationOfSymbolicLink(atPath: path) {
        a += ["--symlink", target, "/etc/" + entry]
      } else {
        a += ["--ro-bind", path, "/etc/" + entry]
      }
    }
    a += ["--ro-bind", identityFiles.passwd, "/etc/passwd", "--ro-bind", identityFiles.group, "/etc/group"]
    return a + ["--remount-ro", "/etc"]
  }
}
