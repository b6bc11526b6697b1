import Foundation
import SandboxProtocol

/// How one sandbox is isolated by the local driver: the `bwrap` (Debian package `bubblewrap`) command
/// line that starts the supervisor.
///
/// - New mount, PID, UTS, IPC (and, where allowed, cgroup) namespaces; the root is an empty tmpfs.
/// - Host system directories read-only: `/usr`, `/etc` and the top-level `/bin`, `/sbin`, `/lib*`
///   (re-created as the same symlinks when they are symlinks, as on merged-/usr Debian); the Swift
///   runtime directory when it lives outside `/usr` (toolchain installs under `/opt`).
/// - Fresh `/proc`, a minimal `/dev`, private tmpfs `/tmp` and `/var/tmp` (mode 1777).
/// - The private writable workspace at `/sandbox`; the sandbox's credentials read-only at
///   `/run/openshell`; the supervisor binary read-only at `/opt/openshell/bin/openshell-sandbox`.
/// - Its own hostname (the sandbox name).
/// - Users: when the gateway runs as root, the supervisor runs as root inside the namespaces with only
///   CAP_SETUID, CAP_SETGID and CAP_KILL (plus, with network confinement, CAP_SYS_ADMIN,
///   CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH; everything else dropped), and starts every workload process
///   (main command, exec) as the unprivileged host user `nobody` (65534:65534) through `setpriv` with
///   no_new_privs; the workspace is owned by that user and the sandbox key (0600 root) is unreadable to
///   the workload. When the gateway is not root, bwrap uses an unprivileged user namespace and
///   everything runs as the gateway's user.
///
/// Network: the supervisor itself stays in the host network namespace (it dials the gateway on
/// loopback and runs the sandbox's policy proxy on the host side of the veth pair); with
/// ``Network/confined(namespaceFile:)`` the sandbox's own network namespace (``SandboxNetworks``) is
/// bind-mounted read-only at `SandboxProtocol.networkNamespaceMount`, and the supervisor enters it for
/// every workload process before dropping privileges. For that the supervisor keeps CAP_SYS_ADMIN
/// (setns), CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (listing `/proc/<pid>/fd`, mode 0500 of the workload
/// user, and reading `/proc/<pid>/exe` of the non-dumpable workload processes, to identify which
/// binary opened a proxy connection). Landlock and seccomp belong
/// in the supervisor, applied just before it execs a workload process (`Supervisor/Workload.swift`).
struct BubblewrapCommand {
  enum Network {
    /// No network confinement (only used where the driver was told it may not confine: never by default).
    case host
    /// The sandbox's named network namespace (its nsfs file, e.g. `/run/netns/openshell-<id>`).
    case confined(namespaceFile: String)
  }

  var bwrapPath = "/usr/bin/bwrap"
  var hostname: String
  var workspace: String
  var credentials: String
  var supervisorBinary: String
  var runtimeLibraryDirectories: [String] = []
  var runAsRoot: Bool
  var network: Network = .host

  var arguments: [String] {
    var a = ["--unshare-pid", "--unshare-uts", "--unshare-ipc", "--unshare-cgroup-try", "--new-session"]
    if !runAsRoot { a += ["--unshare-user"] }
    var networkMount: [String] = []
    switch network {
    case .host: break
    case .confined(let file): networkMount = ["--ro-bind", file, SandboxProtocol.networkNamespaceMount]
    }
    a += ["--hostname", hostname]
    let fm = FileManager.default
    for top in ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"] {
      let path = "/" + top
      if let target = try? fm.destinationOfSymbolicLink(atPath: path) {
        a += ["--symlink", target, path]
      } else if fm.fileExists(atPath: path) {
        a += ["--ro-bind", path, path]
      }
    }
    for dir in runtimeLibraryDirectories where !dir.hasPrefix("/usr/") {
      a += ["--ro-bind", dir, dir]
    }
    a += ["--proc", "/proc", "--dev", "/dev"]
    a += ["--perms", "1777", "--tmpfs", "/tmp", "--dir", "/var", "--perms", "1777", "--tmpfs", "/var/tmp"]
    a += ["--bind", workspace, SandboxProtocol.workspace]
    a += ["--ro-bind", credentials, SandboxProtocol.credentialsDirectory]
    a += ["--ro-bind", supervisorBinary, SandboxProtocol.supervisorPath]
    a += networkMount
    if runAsRoot {
      a += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
      if case .confined = network {
        a += ["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SYS_PTRACE", "--cap-add", "CAP_DAC_READ_SEARCH"]
      }
    }
    a += ["--chdir", SandboxProtocol.workspace, "--info-fd", "3", "--", SandboxProtocol.supervisorPath]
    return a
  }

  /// Directories of the Swift runtime libraries this process uses (from /proc/self/maps), so that the
  /// supervisor (built with the same toolchain) finds them inside the sandbox.
  static func runtimeLibraryDirectories() -> [String] {
    // Not String(contentsOfFile:): it stops after the first 4 KiB of a /proc file.
    guard let handle = FileHandle(forReadingAtPath: "/proc/self/maps") else { return [] }
    let maps = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
    try? handle.close()
    var dirs = Set<String>()
    for line in maps.split(separator: "\n") {
      guard let slash = line.firstIndex(of: "/") else { continue }
      let path = String(line[slash...])
      if path.contains("/libswiftCore.so") || path.contains("/libFoundation.so") || path.contains("/libdispatch.so") {
        dirs.insert((path as NSString).deletingLastPathComponent)
      }
    }
    return dirs.sorted()
  }
}
