import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// Linux process helpers: liveness, command lines, who holds a TCP port, spawning a detached daemon.
enum ProcessTable {
  /// Alive and not a zombie.
  static func isAlive(_ pid: Int32) -> Bool {
    guard pid > 0 else { return false }
    if kill(pid, 0) != 0 && errno == ESRCH { return false }
    if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    {
      let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).prefix(1)
      if state == "Z" || state == "X" { return false }
    }
    return true
  }

  static func commandLine(_ pid: Int32) -> [String]? {
    guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return nil }
    return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
  }

  static func name(_ pid: Int32) -> String? {
    (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
  }

  /// Describes a process for messages: `pid 123 (python3 -m http.server 8080)`.
  static func describe(_ pid: Int32) -> String {
    if let args = commandLine(pid) {
      let shown = args.prefix(6).map { ($0 as NSString).lastPathComponent.count < $0.count && $0 == args.first ? ($0 as NSString).lastPathComponent : $0 }
      return "pid \(pid) (\(shown.joined(separator: " "))\(args.count > 6 ? " …" : ""))"
    }
    return "pid \(pid)" + (name(pid).map { " (\($0))" } ?? "")
  }

  // MARK: ports

  /// True when `host:port` can be bound right now (SO_REUSEADDR, so TIME_WAIT does not count).
  static func portIsFree(_ port: Int, host: String = "127.0.0.1") -> Bool { bindError(port, host: host) == nil }

  /// The errno of binding a TCP socket (SO_REUSEADDR) to `host:port`, nil when the bind succeeds:
  /// EADDRINUSE when something holds the port, EADDRNOTAVAIL when `host` is not an address of this machine.
  static func bindError(_ port: Int, host: String = "127.0.0.1") -> Int32? {
    let v6 = host.contains(":")
    let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    if v6 {
      var a = sockaddr_in6()
      a.sin6_family = sa_family_t(AF_INET6)
      a.sin6_port = in_port_t(UInt16(port)).bigEndian
      _ = inet_pton(AF_INET6, host, &a.sin6_addr)
      let rc = withUnsafePointer(to: &a) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
      }
      return rc == 0 ? nil : errno
    }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = in_port_t(UInt16(port)).bigEndian
    a.sin_addr.s_addr = inet_addr(host == "localhost" ? "127.0.0.1" : host)
    let rc = withUnsafePointer(to: &a) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    return rc == 0 ? nil : errno
  }

  /// The pid of the process listening on TCP `port` (any address), from /proc/net/tcp{,6} and
  /// /proc/*/fd. nil when unknown (e.g. another user's process).
  static func listener(port: Int) -> Int32? {
    var inodes = Set<String>()
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
      guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
      for line in text.split(separator: "\n").dropFirst() {
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        guard f.count > 9, f[3] == "0A", let colon = f[1].lastIndex(of: ":"),
          Int(f[1][f[1].index(after: colon)...], radix: 16) == port
        else { continue }
        inodes.insert(String(f[9]))
      }
    }
    guard !inodes.isEmpty else { return nil }
    let targets = Set(inodes.map { "socket:[\($0)]" })
    let procs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    for p in procs {
      guard let pid = Int32(p) else { continue }
      let fdDir = "/proc/\(p)/fd"
      guard let fds = try? FileManager.default.contentsOfDirectory(atPath: fdDir) else { continue }
      for fd in fds {
        if let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fdDir)/\(fd)"), targets.contains(link) {
          return pid
        }
      }
    }
    return nil
  }

  // MARK: spawning and stopping

  /// Path of this executable.
  static var selfExecutable: String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
  }

  /// Starts `argv` in a new session (setsid), stdin from /dev/null, stdout and stderr appended to
  /// `logPath`, in `workingDirectory`. Returns the child's pid; it outlives this process.
  ///
  /// No other descriptor of this process is inherited (`Spawner` closes every descriptor above 2 in the
  /// child): a long-lived daemon must not keep the caller's sockets or pipes open — an inherited bound
  /// socket would hold its port for the daemon's lifetime, and an inherited pipe would make
  /// `$(openshell gateway start)` wait for the daemon to exit.
  /// - Throws: `CLIError` when the executable cannot be started.
  static func spawnDaemon(executable: String, arguments: [String], environment: [String: String], logPath: String, workingDirectory: String) throws -> Int32 {
    do {
      return try Spawner.spawn(
        executable, arguments, environment: environment,
        stdin: .null, stdout: .appendFile(logPath), stderr: .appendFile(logPath),
        workingDirectory: workingDirectory, newSession: true
      ).pid
    } catch let e as SpawnError {
      throw CLIError(e.message)
    }
  }

  /// Reaps `pid` if it is our exited child; returns its exit status when it has exited.
  static func reap(_ pid: Int32) -> Int32? {
    var status: Int32 = 0
    let r = waitpid(pid, &status, WNOHANG)
    guard r == pid else { return nil }
    if status & 0x7f == 0 { return (status >> 8) & 0xff }
    return 128 + (status & 0x7f)
  }

  /// SIGTERM, then wait up to `timeout` seconds; SIGKILL if still alive. Returns true if it was killed.
  @discardableResult
  static func terminate(_ pid: Int32, timeout: Double = 20) -> Bool {
    kill(pid, SIGTERM)
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
      _ = reap(pid)
      if !isAlive(pid) { return false }
      usleep(50_000)
    }
    kill(pid, SIGKILL)
    for _ in 0..<100 where isAlive(pid) { _ = reap(pid); usleep(50_000) }
    return true
  }
}
