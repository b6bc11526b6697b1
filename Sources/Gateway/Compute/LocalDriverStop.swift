import EventLog
import Foundation
import GRPCCore
import Logging
import OpenShellAPI
import Projections
import SandboxConfinement
import SandboxProtocol
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Stopping sandboxes and the driver's small file and process helpers.
extension LocalComputeDriver {
  /// Stops whatever runs for `id`: SIGTERM to the supervisor, SIGKILL to the PID namespace after 3 s.
  func stop(_ id: String) async {
    let instance = instances.withLock { $0[id] } ?? loadInstance(id)
    hub.disconnect(id)
    SandboxEtcView.detach(base: dir(id))
    guard let instance, HostProcess.exitStatus(instance) == nil else {
      instances.withLock { $0[id] = nil }
      reapStrays(id)
      scrubLaunchEnvironment(id, instanceID: nil)
      removeCgroups(id)
      await networks.tearDownOffPool(id)
      return
    }
    stopping.withLock { _ = $0.insert(id) }
    defer { stopping.withLock { _ = $0.remove(id) } }
    // bwrap writes the namespace init's pid right after it started; killing only the outer bwrap
    // would leave the sandbox running, so wait for it (briefly) first.
    var nsInit = HostProcess.namespaceInit(infoFile: dir(id) + "/bwrap-info.json")
    for _ in 0..<100 where nsInit == nil && HostProcess.exitStatus(instance) == nil {
      try? await Task.sleep(for: .milliseconds(10))
      nsInit = HostProcess.namespaceInit(infoFile: dir(id) + "/bwrap-info.json")
    }
    if let nsInit {
      let supervisors = HostProcess.children(nsInit)
      if supervisors.isEmpty { kill(nsInit, SIGKILL) }
      for child in supervisors { kill(child, SIGTERM) }
    } else {
      kill(instance.pid, SIGKILL)
    }
    for _ in 0..<30 {
      if HostProcess.exitStatus(instance) != nil { break }
      try? await Task.sleep(for: .milliseconds(100))
    }
    if HostProcess.exitStatus(instance) == nil {
      if let nsInit { kill(nsInit, SIGKILL) }
      kill(instance.pid, SIGKILL)
      for _ in 0..<50 {
        if HostProcess.exitStatus(instance) != nil { break }
        try? await Task.sleep(for: .milliseconds(20))
      }
    }
    // Whatever still runs in the sandbox's PID namespace (commands orphaned by the supervisor's exit keep
    // bwrap's init alive) ends with the init.
    if let nsInit = HostProcess.liveNamespaceInit(infoFile: dir(id) + "/bwrap-info.json") {
      kill(nsInit, SIGKILL)
      for _ in 0..<50 where HostProcess.liveNamespaceInit(infoFile: dir(id) + "/bwrap-info.json") != nil {
        try? await Task.sleep(for: .milliseconds(20))
      }
    }
    instances.withLock { $0[id] = nil }
    reapStrays(id)
    // Nothing reads launch.json any more (a start writes it anew): a supervisor stopped before it connected
    // leaves no environment values on disk.
    scrubLaunchEnvironment(id, instanceID: nil)
    try? FileManager.default.removeItem(atPath: dir(id) + "/instance.json")
    removeCgroups(id)
    await networks.tearDownOffPool(id)
  }

  /// Removes the sandbox's cgroups, and those of the untagged name an older gateway used (rmdir(2) of a
  /// cgroup that still holds processes fails with EBUSY, so another gateway's running sandbox keeps its own).
  func removeCgroups(_ id: String) {
    cgroups?.remove(sandboxID: cgroupName(id))
    cgroups?.remove(sandboxID: id)
  }

  /// Whether the spec asks for cpu/memory limits (validated at create by `unsupported(spec:)`).
  func hasLimits(_ spec: Openshell_V1_SandboxSpec) -> Bool {
    spec.template.hasResources && !spec.template.resources.fields.isEmpty
  }

  func removeDirectory(_ id: String) {
    guard FileManager.default.fileExists(atPath: dir(id)) else { return }
    // Never descend into a mounted /etc overlay (read-only, so nothing of the host's would go, but the
    // removal would fail).
    SandboxEtcView.detach(base: dir(id))
    try? FileManager.default.removeItem(atPath: dir(id))
  }

  func lastLines(of path: String, _ n: Int) -> String {
    guard let data = FileManager.default.contents(atPath: path) else { return "" }
    return String(decoding: data.suffix(4096), as: UTF8.self).split(separator: "\n").suffix(n).joined(separator: " | ")
  }

  /// Lets queued per-sandbox work finish before the gateway exits, for at most `timeout`: a `gateway stop`
  /// right after `sandbox delete` would otherwise leave the deleted sandbox's processes, cgroups and network
  /// namespace until the next start's sweep (found as an empty `openshell-<id>-<tag>` namespace after each
  /// CI run). Running sandboxes are not stopped: they outlive the gateway, as in OpenShell.
  /// Returns the number of sandboxes whose work had not finished by then (logged by the caller).
  public func drain(timeout: Duration) async -> Int {
    await queue.drain(timeout: timeout)
  }

  /// Test support: stops every sandbox this driver runs (the gateway itself leaves them running).
  public func stopAll() async {
    let ids = Array(instances.withLock { $0.keys })
    for id in ids { await stop(id) }
  }

  /// Test support: the host pid of a sandbox's supervisor process, if it runs.
  public func supervisorPID(_ id: String) -> Int32? {
    guard let nsInit = HostProcess.namespaceInit(infoFile: dir(id) + "/bwrap-info.json") else { return nil }
    return HostProcess.children(nsInit).first
  }
}
