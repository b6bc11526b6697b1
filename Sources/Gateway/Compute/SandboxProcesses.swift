import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// One running start of a sandbox: the `bwrap` process (a child of the gateway that started it, or
/// adopted after a gateway restart) and the sandbox's PID-namespace init.
struct SandboxInstance: Codable, Sendable, Equatable {
  /// Host pid of the outer `bwrap` process.
  var pid: Int32
  /// Its start time (clock ticks since boot, /proc/<pid>/stat field 22): guards against pid reuse.
  var startTicks: UInt64
  var instanceID: String
  /// The gateway endpoint the supervisor was given (an adopted supervisor must still be able to reach us).
  var endpoint: String
  var startedNs: Int64
}

/// Process helpers of the local driver (Linux /proc).
enum HostProcess {
  /// Field 22 (starttime) and the state letter of /proc/<pid>/stat, nil when there is no such process.
  static func stat(_ pid: Int32) -> (state: Character, startTicks: UInt64)? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = text.lastIndex(of: ")")
    else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // fields[0] = state (field 3); starttime is field 22 → index 19.
    guard fields.count > 19, let state = fields[0].first, let ticks = UInt64(fields[19]) else { return nil }
    return (state, ticks)
  }

  /// Whether the instance's bwrap process still runs. Reaps it when it is our child.
  /// - Returns: nil while running, else the exit status (-1 when unknown, e.g. an adopted process).
  static func exitStatus(_ instance: SandboxInstance) -> Int32? {
    if let status = Spawner.poll(instance.pid) {
      if status >= 0 { return status }
      // Not our child (adopted after a restart): look at /proc.
      guard let s = stat(instance.pid), s.startTicks == instance.startTicks, s.state != "Z" else { return -1 }
      return nil
    }
    return nil
  }

  /// Child pids of a process (Linux ≥ 3.5 with CONFIG_PROC_CHILDREN).
  static func children(_ pid: Int32) -> [Int32] {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8) else { return [] }
    return text.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
  }

  /// The sandbox's PID-namespace init if it still runs: bwrap's `child-pid` from its --info-fd file, only
  /// when that process is still in the PID namespace the file names (`pid-namespace` inode), so a reused
  /// pid is never returned.
  ///
  /// bwrap's init outlives the supervisor while any other process of the sandbox runs (it reaps until no
  /// child is left), and the outer bwrap exits with the supervisor: a stopped sandbox can leave its init
  /// and orphaned commands behind. Killing this init with SIGKILL ends every process in the namespace
  /// (pid_namespaces(7)).
  static func liveNamespaceInit(infoFile: String) -> Int32? {
    guard let info = bwrapInfo(infoFile), let ns = info.pidNamespace,
      let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(info.childPID)/ns/pid"),
      link == "pid:[\(ns)]", let s = stat(info.childPID), s.state != "Z"
    else { return nil }
    return info.childPID
  }

  /// The sandbox's PID-namespace init (bwrap's `child-pid` from its --info-fd file).
  static func namespaceInit(infoFile: String) -> Int32? { bwrapInfo(infoFile)?.childPID }

  /// bwrap's --info-fd JSON: `child-pid` and (bwrap ≥ 0.4) `pid-namespace`, the namespace's inode number.
  private static func bwrapInfo(_ infoFile: String) -> (childPID: Int32, pidNamespace: Int?)? {
    // At most 64 KiB of a regular file: the path could name a device (a full disk was simulated by
    // pointing it at /dev/full, which reads as endless zeros).
    guard let attributes = try? FileManager.default.attributesOfItem(atPath: infoFile),
      attributes[.type] as? FileAttributeType == .typeRegular,
      let handle = FileHandle(forReadingAtPath: infoFile)
    else { return nil }
    defer { try? handle.close() }
    guard let data = try? handle.read(upToCount: 64 << 10),
      let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
      let pid = json["child-pid"] as? Int
    else { return nil }
    return (Int32(pid), json["pid-namespace"] as? Int)
  }
}
