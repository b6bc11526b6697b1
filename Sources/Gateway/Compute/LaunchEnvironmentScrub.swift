import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// Environment values of a sandbox (`spec.environment`, template `environment`) are sealed in the log under
/// the sandbox's data key (``SandboxEnvironmentSecrets``) and opened only to start its supervisor, which reads
/// them once from `run/launch.json` at its start. Once that supervisor connected, the values are removed from
/// the file (names and everything else kept), so that they live in the supervisor's memory only: not on disk
/// while the sandbox runs or is stopped, and not in an archive of the data directory (`gateway start
/// --recreate`, `gateway destroy`), where deleting the sandbox could no longer reach them (issue 16, secrets).
extension LocalComputeDriver {
  /// Rewrites sandbox `id`'s `launch.json` without environment values when it describes the start with
  /// `instanceID` (or any start, when `instanceID` is nil); atomically (a temporary file renamed over it).
  /// A missing or unreadable file is left as it is (nothing to remove, or a start that failed).
  func scrubLaunchEnvironment(_ id: String, instanceID: String?) {
    let path = dir(id) + "/run/launch.json"
    guard let data = FileManager.default.contents(atPath: path),
      var launch = try? JSONDecoder().decode(SupervisorLaunch.self, from: data),
      instanceID == nil || launch.instanceID == instanceID,
      launch.environment.values.contains(where: { !$0.isEmpty })
    else { return }
    launch.environment = launch.environment.mapValues { _ in "" }
    guard let scrubbed = try? JSONEncoder().encode(launch) else { return }
    let temporary = path + ".scrub"
    guard FileManager.default.createFile(atPath: temporary, contents: scrubbed, attributes: [.posixPermissions: 0o644]),
      rename(temporary, path) == 0
    else {
      unlink(temporary)
      hub.logs.gateway(id, "cannot remove the environment values from launch.json", level: "ERROR")
      return
    }
  }
}
