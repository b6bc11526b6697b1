#if canImport(Glibc)
  import Glibc
#endif

/// Why a workload command cannot be executed, in a shell's words and with its exit code.
public struct CommandProblem: Equatable, Sendable {
  /// `NAME: command not found`, `NAME: no such file or directory`, `NAME: is a directory` or
  /// `NAME: permission denied`.
  public let message: String
  /// 127: nothing by that name; 126: found, but the workload user cannot execute it.
  public let exitCode: Int32
}

/// Resolves a command as execvp(3) will, in the launcher, after the confinement and `--chdir`: as the
/// workload user, from the workload's working directory and `PATH`, so that a missing or unusable command is
/// reported as a shell reports it.
///
/// It must run there and not in the supervisor: the supervisor runs as root, and a lookup with root's
/// rights tells apart a file, a directory and nothing at all inside a directory the workload user may not
/// even enter (127 against 126), which that user must not learn. As the workload user such a path is
/// `permission denied` (126) whatever it names.
public enum CommandLookup {
  /// What a path is to the calling process.
  public enum Executable: Equatable, Sendable {
    /// A regular file it may execute.
    case yes
    /// Nothing there (or not reachable: a path component is no directory).
    case missing
    /// A directory.
    case directory
    /// There, but it may not execute it (or may not look).
    case denied
  }

  /// Why `name` cannot be executed by the calling process: a name with a `/` is taken as a path (relative
  /// to the working directory), any other is searched in `searchPath` (an empty entry is the working
  /// directory); directories and files that are not found in the search are skipped, as execvp does with
  /// files that are not there.
  /// - Returns: nil when it can be executed.
  public static func problem(_ name: String, searchPath: String) -> CommandProblem? {
    if name.contains("/") {
      switch executable(name) {
      case .yes: return nil
      case .missing: return CommandProblem(message: "\(name): no such file or directory", exitCode: 127)
      case .directory: return CommandProblem(message: "\(name): is a directory", exitCode: 126)
      case .denied: return CommandProblem(message: "\(name): permission denied", exitCode: 126)
      }
    }
    var denied = false
    for dir in searchPath.split(separator: ":", omittingEmptySubsequences: false) {
      switch executable((dir.isEmpty ? "." : String(dir)) + "/" + name) {
      case .yes: return nil
      case .denied: denied = true
      case .missing, .directory: continue
      }
    }
    return denied
      ? CommandProblem(message: "\(name): permission denied", exitCode: 126)
      : CommandProblem(message: "\(name): command not found", exitCode: 127)
  }

  /// Whether the calling process may execute the file at `path`: a regular file for which `access(X_OK)`
  /// holds (the kernel applies the caller's uid and groups and refuses files on `noexec` mounts).
  public static func executable(_ path: String) -> Executable {
    var st = stat()
    guard stat(path, &st) == 0 else { return errno == EACCES ? .denied : .missing }
    if (st.st_mode & S_IFMT) == S_IFDIR { return .directory }
    guard (st.st_mode & S_IFMT) == S_IFREG else { return .denied }
    return access(path, X_OK) == 0 ? .yes : .denied
  }
}
