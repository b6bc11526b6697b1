import CConfine
import Foundation
import Logging
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// Finds and ends sandbox processes the gateway does not account for ("strays"), by the mark every
/// process of a local sandbox start carries in its command line (issue 17: "no sandbox process may
/// outlive the gateway's knowledge of it").
///
/// The mark: the outer `bwrap` and its PID-namespace child (a fork of it, same argv) are started with
/// `--bind <data dir>/sandboxes/<id>/workspace /sandbox` (``BubblewrapCommand``); the `/bin/sh` that joins
/// cgroups before exec'ing bwrap carries the same arguments. The data directory in the path keeps the
/// gateways of one host apart: a gateway only ever ends processes marked with its own sandboxes root.
///
/// Why strays exist: bubblewrap's namespace child waits on an eventfd for its parent's go-ahead; when the
/// parent dies first (e.g. it cannot write its `--info-fd` file on a full disk, bubblewrap 0.8
/// `bubblewrap.c` "Write to info_fd") the child blocks forever, in its own PID namespace, unknown to
/// anyone. `--die-with-parent` does not help there (the child sets its parent-death signal only after that
/// wait) and would tie the sandbox to the gateway's life, which supervisors deliberately outlive.
///
/// A process inside a sandbox can forge the mark in its own argv; the only effect is that the forged
/// process itself is ended. Signals go through a pidfd opened before the mark is checked again, so a pid
/// reused between the scan and the signal is never hit.
enum StrayProcesses {
  /// One marked process.
  struct Marked: Equatable {
    var pid: Int32
    var sandboxID: String
  }

  /// The argument bwrap gets for the sandbox's workspace: the mark.
  static func workspaceArgument(root: String, sandboxID: String) -> String { "\(root)/\(sandboxID)/workspace" }

  /// Every live process whose argv carries the mark of a sandbox under `root` (`<data dir>/sandboxes`).
  /// - Parameter sandboxID: only the marks of this sandbox (nil: any).
  static func scan(root: String, sandboxID: String? = nil) -> [Marked] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    let me = getpid()
    var found: [Marked] = []
    for entry in entries {
      guard let pid = Int32(entry), pid != me, let id = mark(pid, root: root) else { continue }
      if let sandboxID, id != sandboxID { continue }
      found.append(Marked(pid: pid, sandboxID: id))
    }
    return found
  }

  /// The sandbox id a process is marked with (under `root`), nil when unmarked or gone.
  static func mark(_ pid: Int32, root: String) -> String? {
    guard let argv = commandLine(pid) else { return nil }
    let prefix = root + "/"
    for i in argv.indices.dropLast() where argv[i] == "--bind" {
      let path = argv[i + 1]
      guard path.hasPrefix(prefix), path.hasSuffix("/workspace"), i + 2 < argv.count, argv[i + 2] == "/sandbox" else { continue }
      let id = path.dropFirst(prefix.count).dropLast("/workspace".count)
      if !id.isEmpty, !id.contains("/") { return String(id) }
    }
    return nil
  }

  /// argv of a process (at most 256 KiB of `/proc/<pid>/cmdline` are read); nil when it is gone or a zombie.
  static func commandLine(_ pid: Int32) -> [String]? {
    let fd = open("/proc/\(pid)/cmdline", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16384)
    while bytes.count < 256 << 10 {
      let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if n <= 0 { break }
      bytes += chunk[0..<n]
    }
    guard !bytes.isEmpty else { return nil }
    return bytes.split(separator: 0, omittingEmptySubsequences: false).dropLast(bytes.last == 0 ? 1 : 0)
      .map { String(decoding: $0, as: UTF8.self) }
  }

  /// Sends SIGKILL to each process that is still marked with the same sandbox (checked again through a
  /// pidfd), then waits up to `wait` for them to be gone. SIGKILL to a PID-namespace init ends every
  /// process of that namespace (pid_namespaces(7)).
  /// - Returns: how many processes were signalled.
  @discardableResult
  static func end(_ processes: [Marked], root: String, wait: Duration = .seconds(2)) -> Int {
    var signalled: [Int32] = []
    for p in processes {
      let pidfd = cconfine_pidfd_open(p.pid)
      guard pidfd >= 0 else { continue }
      defer { close(pidfd) }
      guard mark(p.pid, root: root) == p.sandboxID else { continue }
      if cconfine_pidfd_send_signal(pidfd, SIGKILL) == 0 { signalled.append(p.pid) }
    }
    let deadline = ContinuousClock.now + wait
    while ContinuousClock.now < deadline, signalled.contains(where: { mark($0, root: root) != nil }) {
      // Our own children (an outer bwrap) stay zombies until reaped; their argv then reads empty.
      for pid in signalled { _ = Spawner.poll(pid) }
      usleep(10_000)
    }
    return signalled.count
  }

  /// Ends every process marked under `root` that is not in `keep` (the pids of instances the gateway
  /// runs and knows of).
  /// - Returns: the processes ended.
  @discardableResult
  static func reap(root: String, sandboxID: String? = nil, keep: Set<Int32> = []) -> [Marked] {
    // A second round catches a namespace child forked by a process of the first round meanwhile.
    var ended: [Marked] = []
    for _ in 0..<3 {
      let strays = scan(root: root, sandboxID: sandboxID).filter { !keep.contains($0.pid) }
      guard !strays.isEmpty else { break }
      end(strays, root: root)
      ended += strays.filter { s in !ended.contains { $0.pid == s.pid } }
    }
    return ended
  }
}

extension LocalComputeDriver {
  /// Ends the processes marked with sandbox `id` (``StrayProcesses``); called once nothing of that sandbox
  /// should run any more (its instance stopped, exited or never recorded).
  func reapStrays(_ id: String) {
    let ended = StrayProcesses.reap(root: root, sandboxID: id)
    if !ended.isEmpty {
      hub.logs.gateway(id, "ended \(ended.count) sandbox process(es) left behind by a failed or stopped start", level: "WARN")
      strayLogger.warning("sandbox \(id): ended \(ended.count) stray process(es) (pids \(ended.map(\.pid)))")
    }
  }

  /// Start-up sweep: ends every process marked under this gateway's sandboxes root except the recorded,
  /// still running instances (outer bwrap and namespace init) of `ids`, e.g. what a gateway that died in
  /// the middle of a start, or a start that failed on a full disk, left behind.
  func reapStrays(keepingInstancesOf ids: Set<String>) {
    var keep = Set<Int32>()
    for id in ids {
      guard let instance = loadInstance(id), HostProcess.exitStatus(instance) == nil else { continue }
      keep.insert(instance.pid)
      if let nsInit = HostProcess.liveNamespaceInit(infoFile: dir(id) + "/bwrap-info.json") { keep.insert(nsInit) }
    }
    let ended = StrayProcesses.reap(root: root, keep: keep)
    if !ended.isEmpty {
      let byID = Dictionary(grouping: ended, by: \.sandboxID).map { "\($0.key) (\($0.value.count))" }.sorted()
      strayLogger.warning("ended \(ended.count) stray sandbox process(es) left by an earlier run: \(byID.joined(separator: ", "))")
    }
  }
}

private let strayLogger = Logger(label: "openshell.driver.local")
