import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Finding a sandbox's supervisor process from the host, through `/proc` (benchmarks and tests that read
/// its CPU time or threads).
public enum SupervisorProcesses {
  /// The pid of the supervisor (`argv[0]` = ``SandboxProtocol/supervisorPath``) whose bubblewrap runs
  /// with `--hostname NAME` and which descends from process `ancestor` (default: this process, whose
  /// in-process gateway started it), so that a supervisor left by another run or gateway does not count.
  /// - Returns: nil when there is none.
  public static func pid(hostname: String, ancestor: pid_t = getpid()) -> pid_t? {
    let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
    for pid in pids where cmdline(pid).first == SandboxProtocol.supervisorPath {
      var p = parent(pid)
      var named = false
      while p > 1 {
        let args = cmdline(p)
        if let i = args.firstIndex(of: "--hostname"), i + 1 < args.count, args[i + 1] == hostname { named = true }
        if p == ancestor && named { return pid }
        p = parent(p)
      }
    }
    return nil
  }

  /// The arguments of process `pid` (`/proc/<pid>/cmdline`); empty when it is gone.
  static func cmdline(_ pid: pid_t) -> [String] {
    (FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()).split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
  }

  /// The parent of process `pid` (`/proc/<pid>/stat` field 4); 0 when it is gone.
  static func parent(_ pid: pid_t) -> pid_t {
    let stat = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/stat") ?? Data(), as: UTF8.self)
    guard let close = stat.lastIndex(of: ")") else { return 0 }
    return pid_t(stat[stat.index(after: close)...].split(separator: " ").dropFirst().first ?? "") ?? 0
  }
}
