import Foundation

/// Where the CLI and `openshell-replay` keep a user's files, by the XDG base directory rules OpenShell's CLI
/// follows: `$XDG_CONFIG_HOME` (else `<home>/.config`) for registrations, `$XDG_STATE_HOME` (else
/// `<home>/.local/state`) for local gateways' data and archives; relative XDG values are ignored.
///
/// `<home>` is `$HOME` when it is set and not empty, else the passwd entry's home directory — as a shell, ssh
/// and OpenShell's own CLI resolve it. (Foundation's `homeDirectoryForCurrentUser` ignores `$HOME` for root, so
/// a root shell with `HOME=/some/dir` put its gateways where scripts that read `$HOME` did not find them.)
public enum UserDirectories {
  /// The user's home directory.
  public static var home: URL {
    if let h = ProcessInfo.processInfo.environment["HOME"], !h.isEmpty { return URL(fileURLWithPath: h) }
    return FileManager.default.homeDirectoryForCurrentUser
  }

  /// `$XDG_CONFIG_HOME`, else `<home>/.config`.
  public static var configHome: URL { xdg("XDG_CONFIG_HOME") ?? home.appendingPathComponent(".config") }

  /// `$XDG_STATE_HOME`, else `<home>/.local/state`.
  public static var stateHome: URL { xdg("XDG_STATE_HOME") ?? home.appendingPathComponent(".local/state") }

  /// The variable's value when it is an absolute path; relative values are ignored, as the XDG base directory
  /// specification says (they would name another directory in every working directory).
  private static func xdg(_ name: String) -> URL? {
    guard let x = ProcessInfo.processInfo.environment[name], x.hasPrefix("/") else { return nil }
    return URL(fileURLWithPath: x)
  }
}
