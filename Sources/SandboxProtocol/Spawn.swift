import CSpawn
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A child process started with posix_spawn(3): used by the gateway's local driver (to start
/// `bwrap`) and by the supervisor (to start the main process and exec commands).
///
/// File descriptors: 0, 1, 2 are what `stdin`/`stdout`/`stderr` say; every other inherited descriptor
/// is closed in the child (posix_spawn_file_actions_addclosefrom_np), so a sandbox never holds the
/// gateway's sockets or its event-log lock.
public struct SpawnedProcess: Sendable {
  /// Process id of the child.
  public let pid: pid_t
  /// Write end of the child's stdin (when `.pipe`), else nil.
  public let stdin: Int32?
  /// Read ends of the child's stdout/stderr (when `.pipe`), else nil.
  public let stdout: Int32?
  /// Read end of the child's stderr (when `.pipe`), else nil.
  public let stderr: Int32?
}

/// Where one standard stream of a spawned child goes.
public enum SpawnIO: Sendable {
  case null
  case pipe
  /// Opened for appending (created 0600 if missing).
  case appendFile(String)
  /// An existing descriptor of the parent, duplicated.
  case fd(Int32)
  /// A terminal device opened read-write in the child (no O_NOCTTY): with `newSession` the child is
  /// a session leader without a controlling terminal, so this open makes it the controlling terminal
  /// (glibc's posix_spawn runs setsid before the file actions). Later streams can name `.fd(0)`, which
  /// then refers to the child's descriptor 0 (the actions run in order 0, 1, 2).
  case terminal(String)
}

/// A process could not be started: posix_spawn or one of its set-up steps (pipe, chdir action) failed.
public struct SpawnError: Error, CustomStringConvertible, Sendable {
  /// One readable line, e.g. `cannot start PATH: REASON` (`strerror` text).
  public let message: String
  /// An error with this message.
  public init(_ message: String) { self.message = message }
  /// The message.
  public var description: String { message }
}

/// Starts child processes with posix_spawn(3) (other descriptors closed, optional new session and
/// working directory) and waits for them; statuses are shell-style (exit code, or 128 + signal).
public enum Spawner {
  /// glibc's POSIX_SPAWN_SETSID (not exported to Swift).
  static let setsidFlag: Int32 = 0x80

  /// Starts `path` with `arguments` (argv[0] = path) and `environment`.
  /// - Parameters:
  ///   - newSession: setsid(2) in the child (a new session and process group: the child survives the
  ///     parent's terminal and can be signalled as a group with `kill(-pid, …)`).
  ///   - newProcessGroup: setpgid(0, 0) in the child (when not `newSession`).
  ///   - fd3File: a file opened for writing as descriptor 3 in the child.
  ///   - fd3Data: bytes the child reads from descriptor 3 (a pipe, written by a background thread and
  ///     closed at the end), e.g. the workload environment for the launcher.
  ///   - searchPath: resolve `path` via PATH (posix_spawnp).
  public static func spawn(
    _ path: String, _ arguments: [String], environment: [String: String],
    stdin: SpawnIO = .null, stdout: SpawnIO = .null, stderr: SpawnIO = .null,
    workingDirectory: String? = nil, newSession: Bool = false, newProcessGroup: Bool = false,
    fd3File: String? = nil, fd3Data: [UInt8]? = nil, searchPath: Bool = false
  ) throws -> SpawnedProcess {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }

    var parentEnds: [Int32?] = [nil, nil, nil]
    var closeInParent: [Int32] = []
    func cleanup() { for fd in closeInParent { close(fd) }; for case let fd? in parentEnds { close(fd) } }
    for (target, io) in [(Int32(0), stdin), (1, stdout), (2, stderr)] {
      switch io {
      case .null:
        posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
      case .appendFile(let file):
        posix_spawn_file_actions_addopen(&actions, target, file, O_WRONLY | O_APPEND | O_CREAT, 0o600)
      case .fd(let fd):
        posix_spawn_file_actions_adddup2(&actions, fd, target)
      case .terminal(let path):
        posix_spawn_file_actions_addopen(&actions, target, path, O_RDWR, 0)
      case .pipe:
        let fds: [Int32]
        do { fds = try cloexecPipe() } catch { cleanup(); throw error }
        let (childEnd, parentEnd) = target == 0 ? (fds[0], fds[1]) : (fds[1], fds[0])
        posix_spawn_file_actions_adddup2(&actions, childEnd, target)
        closeInParent.append(childEnd)
        parentEnds[Int(target)] = parentEnd
      }
    }
    if let fd3File { posix_spawn_file_actions_addopen(&actions, 3, fd3File, O_WRONLY | O_CREAT | O_TRUNC, 0o600) }
    // fd3Data: the read end of a pipe as descriptor 3; the parent writes the bytes after the spawn.
    var fd3Pipe: [Int32]?
    if fd3Data != nil, fd3File == nil {
      let fds: [Int32]
      do { fds = try cloexecPipe() } catch { cleanup(); throw error }
      posix_spawn_file_actions_adddup2(&actions, fds[0], 3)
      fd3Pipe = fds
    }
    /// A file action glibc refused (an errno value): nothing started, every descriptor made above is closed.
    func refused(_ call: String, _ code: Int32) -> SpawnError {
      cleanup()
      fd3Pipe?.forEach { close($0) }
      return SpawnError("cannot start \(path): \(call): \(String(cString: strerror(code)))")
    }
    let closeFrom = cspawn_add_close_from(&actions, fd3File == nil && fd3Pipe == nil ? 3 : 4)
    if closeFrom != 0 { throw refused("posix_spawn_file_actions_addclosefrom_np", closeFrom) }
    if let workingDirectory {
      let code = cspawn_add_chdir(&actions, workingDirectory)
      if code != 0 { throw refused("posix_spawn_file_actions_addchdir_np", code) }
    }

    var flags: Int32 = Int32(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
    if newSession {
      flags |= setsidFlag
    } else if newProcessGroup {
      flags |= Int32(POSIX_SPAWN_SETPGROUP)
      posix_spawnattr_setpgroup(&attributes, 0)
    }
    posix_spawnattr_setflags(&attributes, Int16(truncatingIfNeeded: flags))
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attributes, &empty)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for s in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGQUIT] { sigaddset(&defaults, s) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)

    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for p in envp { free(p) } }
    var pid: pid_t = 0
    let rc =
      searchPath
      ? posix_spawnp(&pid, path, &actions, &attributes, argv, envp)
      : posix_spawn(&pid, path, &actions, &attributes, argv, envp)
    for fd in closeInParent { close(fd) }
    if let fd3Pipe { close(fd3Pipe[0]) }
    guard rc == 0 else {
      for case let fd? in parentEnds { close(fd) }
      if let fd3Pipe { close(fd3Pipe[1]) }
      throw SpawnError("cannot start \(path): \(String(cString: strerror(rc)))")
    }
    if let fd3Pipe, let fd3Data { writeAllAndClose(fd3Pipe[1], Data(fd3Data)) }
    return SpawnedProcess(pid: pid, stdin: parentEnds[0], stdout: parentEnds[1], stderr: parentEnds[2])
  }

  /// A pipe whose ends are both close-on-exec (the child gets only what is dup2'ed to 0–3): [read, write].
  static func cloexecPipe() throws -> [Int32] {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw SpawnError("pipe: \(String(cString: strerror(errno)))") }
    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
    return fds
  }

  /// Blocks the calling thread until `pid` exits; returns the shell-style status
  /// (exit code, or 128 + signal number).
  public static func waitBlocking(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
      if errno != EINTR { return -1 }
    }
    return decode(status)
  }

  /// Non-blocking wait: nil while running; the status once exited (the child is reaped).
  /// Returns -1 when `pid` is not a child of this process.
  public static func poll(_ pid: pid_t) -> Int32? {
    var status: Int32 = 0
    let r = waitpid(pid, &status, WNOHANG)
    if r == 0 { return nil }
    if r < 0 { return -1 }
    return decode(status)
  }

  /// Exit code, or 128 + signal for a signalled process.
  public static func decode(_ status: Int32) -> Int32 {
    let sig = status & 0x7f
    if sig == 0 { return (status >> 8) & 0xff }
    return 128 + sig
  }

  /// Waits for `pid` on a background thread.
  public static func wait(_ pid: pid_t) async -> Int32 {
    await withCheckedContinuation { c in
      Thread.detachNewThread { c.resume(returning: waitBlocking(pid)) }
    }
  }
}

/// Reads a descriptor to EOF on a background thread, yielding chunks as they arrive; closes it at EOF.
public func readChunks(_ fd: Int32, chunkSize: Int = 65536) -> AsyncStream<Data> {
  AsyncStream { continuation in
    Thread.detachNewThread {
      var buffer = [UInt8](repeating: 0, count: chunkSize)
      while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, chunkSize) }
        if n > 0 {
          continuation.yield(Data(buffer[0..<n]))
        } else if n < 0 && errno == EINTR {
          continue
        } else {
          break
        }
      }
      close(fd)
      continuation.finish()
    }
  }
}

/// Writes all of `data` to `fd` (blocking), then closes it. Errors (EPIPE) are ignored.
public func writeAllAndClose(_ fd: Int32, _ data: Data) {
  Thread.detachNewThread {
    data.withUnsafeBytes { raw in
      var offset = 0
      while offset < raw.count {
        let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
        if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { break }
      }
    }
    close(fd)
  }
}

/// A boolean shared between tasks.
public final class SharedFlag: @unchecked Sendable {
  private let lock = NSLock()
  private var value = false
  /// A flag that is not set.
  public init() {}
  /// Sets the flag (it never resets).
  public func set() { lock.lock(); value = true; lock.unlock() }
  /// Whether ``set()`` was called.
  public var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}
