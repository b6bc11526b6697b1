import Foundation
import OpenShellAPI

extension SandboxCgroups {
  /// How many processes the kernel's OOM killer ended in a sandbox's memory cgroup: the `oom_kill` line of
  /// v2 `memory.events` or v1 `memory.oom_control` (kernel Documentation/admin-guide/cgroup-v2.rst,
  /// cgroup-v1/memory.rst). nil when the sandbox has no memory cgroup (no memory limit, or already removed).
  func oomKills(sandboxID: String) -> Int? {
    let file: String
    switch layout {
    case .unified(let parent): file = "\(parent)/openshell/\(sandboxID)/memory.events"
    case .legacy(let memory, _):
      guard let memory else { return nil }
      file = "\(memory)/openshell/\(sandboxID)/memory.oom_control"
    }
    guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") {
      let parts = line.split(separator: " ")
      if parts.count == 2, parts[0] == "oom_kill" { return Int(parts[1]) }
    }
    return nil
  }
}

/// Memory quantities as users write them: 67108864 → "64Mi", 1073741824 → "1Gi", 1000000 → "1000000".
func memoryQuantity(_ bytes: Int64) -> String {
  for (suffix, shift) in [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] where bytes % (Int64(1) << shift) == 0 {
    return "\(bytes >> shift)\(suffix)"
  }
  return String(bytes)
}

extension LocalComputeDriver {
  /// "killed: out of memory (limit 64Mi)" when exit status `code` is a SIGKILL (137) and the sandbox's
  /// memory cgroup counted more OOM kills than `before` (the count taken when the process started; nil =
  /// any kill at all); nil otherwise. The cgroup counts every process of the sandbox, so two processes
  /// SIGKILLed at the same time cannot be told apart.
  public func outOfMemoryNote(sandboxID: String, spec: Data, exitCode code: Int32, oomKillsBefore before: Int? = nil) -> String? {
    guard code == 137, let cgroups, let kills = cgroups.oomKills(sandboxID: cgroupName(sandboxID)), kills > (before ?? 0) else { return nil }
    let parsed = (try? Openshell_V1_SandboxSpec(serializedBytes: spec)).flatMap { try? ResourceLimits.parse($0.template.resources) }
    return "killed: out of memory" + (parsed?.memoryBytes.map { " (limit \(memoryQuantity($0)))" } ?? "")
  }

  /// The OOM-kill count of a sandbox's memory cgroup now (see ``SandboxCgroups/oomKills(sandboxID:)``).
  public func oomKills(sandboxID: String) -> Int? { cgroups?.oomKills(sandboxID: cgroupName(sandboxID)) }

  /// The name of a sandbox's cgroup under `<gateway's cgroup>/openshell/`: `<id>-<tag>` with the tag of its
  /// network namespace (``SandboxNetworks/gatewayTag(sandboxesDirectory:)``), so two gateways in one cgroup
  /// that serve the same sandbox id (a copied data directory) never share a cgroup or its limits.
  func cgroupName(_ id: String) -> String { id + "-" + networks.tag }
}
