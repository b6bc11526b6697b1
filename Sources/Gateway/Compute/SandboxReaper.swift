import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Ends every sandbox process a (stopped) local gateway left running, and removes their network
/// namespaces and `/etc` overlay mounts, for the lifecycle commands that
/// retire its data directory (`gateway start --recreate`, `gateway destroy`). Supervisors normally
/// outlive their gateway so that a restart finds them again; a retired gateway never comes back, so
/// its sandboxes must not linger (they would retry an unreachable gateway until the orphan timeout).
public enum SandboxReaper {
  /// Kills the PID namespace of each sandbox recorded in `<data dir>/sandboxes/<id>/instance.json`
  /// whose process is still the one recorded (pid and start time match, so a reused pid is never hit).
  /// Then ends every other process marked with one of its sandboxes (``StrayProcesses``).
  /// - Returns: the number of recorded sandboxes that were still running.
  @discardableResult
  public static func terminateAll(dataDirectory: String) -> Int {
    let root = dataDirectory + "/sandboxes"
    guard let ids = try? FileManager.default.contentsOfDirectory(atPath: root) else { return 0 }
    var killed: [SandboxInstance] = []
    for id in ids {
      let dir = "\(root)/\(id)"
      // An init left behind by an exited supervisor (with orphaned commands) is ended too.
      if let nsInit = HostProcess.liveNamespaceInit(infoFile: dir + "/bwrap-info.json") { kill(nsInit, SIGKILL) }
      guard let data = FileManager.default.contents(atPath: dir + "/instance.json"),
        let instance = try? JSONDecoder().decode(SandboxInstance.self, from: data),
        let s = HostProcess.stat(instance.pid), s.startTicks == instance.startTicks, s.state != "Z"
      else { continue }
      // SIGKILL to the namespace's init ends every process in it (pid_namespaces(7)); then the bwrap parent.
      if let nsInit = HostProcess.namespaceInit(infoFile: dir + "/bwrap-info.json") { kill(nsInit, SIGKILL) }
      kill(instance.pid, SIGKILL)
      killed.append(instance)
    }
    for _ in 0..<100 {
      if killed.allSatisfy({ HostProcess.stat($0.pid).map { $0.state == "Z" } ?? true }) { break }
      usleep(20_000)
    }
    // Processes no instance.json names (a start that failed half-way, a lost start): by their mark.
    StrayProcesses.reap(root: root)
    // Their network namespaces (and with them the veth pairs) go too: nobody will stop these sandboxes.
    let networks = SandboxNetworks(sandboxesDirectory: root)
    for id in ids { networks.tearDown(id) }
    // And the `/etc` overlay a gateway killed between mounting it and the supervisor's connect left in the
    // host's mount table (SandboxEtcView): no gateway of this data dir will detach it, and in the archive
    // it would stay a live view of the host's /etc that nothing can remove.
    for id in ids { SandboxEtcView.detach(base: "\(root)/\(id)") }
    return killed.count
  }
}

extension SandboxReaper {
  /// The sandboxes of a local gateway's data directory whose processes still run (pid and start time as
  /// recorded in `instance.json`), by name (the namespace's host name, bwrap's `--hostname`), or by id
  /// when the name cannot be read. For the lifecycle commands that warn before ending them.
  public static func liveSandboxes(dataDirectory: String) -> [String] {
    let root = dataDirectory + "/sandboxes"
    guard let ids = try? FileManager.default.contentsOfDirectory(atPath: root) else { return [] }
    var names: [String] = []
    for id in ids.sorted() {
      guard let data = FileManager.default.contents(atPath: "\(root)/\(id)/instance.json"),
        let instance = try? JSONDecoder().decode(SandboxInstance.self, from: data),
        let s = HostProcess.stat(instance.pid), s.startTicks == instance.startTicks, s.state != "Z"
      else { continue }
      let argv = (FileManager.default.contents(atPath: "/proc/\(instance.pid)/cmdline") ?? Data())
        .split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
      if let i = argv.firstIndex(of: "--hostname"), i + 1 < argv.count { names.append(argv[i + 1]) } else { names.append(id) }
    }
    return names
  }
}
