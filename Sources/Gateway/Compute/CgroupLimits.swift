import Foundation
import SwiftProtobuf

#if canImport(Glibc)
  import Glibc
#endif

/// CPU and memory limits of a sandbox, from `SandboxTemplate.resources` (a `google.protobuf.Struct`).
///
/// Accepted shapes (Kubernetes style, as OpenShell's Kubernetes driver passes them on to the pod):
/// `{"cpu": "500m", "memory": "512Mi"}` (what `SandboxWorkloadTemplate.resources` and `sandbox create
/// --cpu/--memory` produce) or `{"limits": {"cpu": …, "memory": …}, "requests": {…}}`. Requests are
/// scheduling hints for a cluster; a single host has nothing to schedule, so they are accepted and only
/// checked for validity. Quantities follow Kubernetes' resource.Quantity: cpu `2`, `0.5`, `250m`;
/// memory in bytes with `Ki Mi Gi Ti Pi Ei` (powers of 1024) or `k M G T P E` (powers of 1000).
public struct ResourceLimits: Equatable, Sendable {
  /// CPU limit in millicores (1000 = one core), nil when unlimited.
  public var cpuMillicores: Int64?
  /// Memory limit in bytes, nil when unlimited.
  public var memoryBytes: Int64?

  /// True when neither a CPU nor a memory limit is set (nothing to apply).
  public var isEmpty: Bool { cpuMillicores == nil && memoryBytes == nil }

  /// Smallest accepted limits: below them a supervisor cannot start (1 MiB of memory is not enough for
  /// the Swift runtime; a cgroup cpu quota below 1 ms per 100 ms period is refused by the kernel).
  public static let minimumMemoryBytes: Int64 = 16 << 20
  /// Smallest CPU limit accepted, millicores (10 = 1 ms of CPU per 100 ms period).
  public static let minimumCPUMillicores: Int64 = 10

  /// Parses `resources`.
  /// - Throws: `ResourceLimitsError` naming the field and what is wrong with it.
  public static func parse(_ resources: Google_Protobuf_Struct) throws(ResourceLimitsError) -> ResourceLimits {
    var fields = resources.fields
    var limits = ResourceLimits()
    func quantities(_ value: Google_Protobuf_Value, _ path: String) throws(ResourceLimitsError) -> (cpu: Int64?, memory: Int64?) {
      guard case .structValue(let s)? = value.kind else {
        throw ResourceLimitsError("\(path) must be an object like {\"cpu\": \"500m\", \"memory\": \"512Mi\"}")
      }
      var cpu: Int64?
      var memory: Int64?
      for (key, v) in s.fields {
        switch key {
        case "cpu": cpu = try cpuMillicores(v, "\(path).cpu")
        case "memory": memory = try memoryBytes(v, "\(path).memory")
        default: throw ResourceLimitsError("\(path).\(key) is not supported by the local driver (only cpu and memory)")
        }
      }
      return (cpu, memory)
    }
    if let v = fields.removeValue(forKey: "cpu") { limits.cpuMillicores = try cpuMillicores(v, "resources.cpu") }
    if let v = fields.removeValue(forKey: "memory") { limits.memoryBytes = try memoryBytes(v, "resources.memory") }
    if let v = fields.removeValue(forKey: "limits") {
      let q = try quantities(v, "resources.limits")
      if let c = q.cpu { limits.cpuMillicores = c }
      if let m = q.memory { limits.memoryBytes = m }
    }
    if let v = fields.removeValue(forKey: "requests") { _ = try quantities(v, "resources.requests") }
    if let key = fields.keys.sorted().first {
      throw ResourceLimitsError("resources.\(key) is not supported by the local driver (cpu, memory, limits, requests)")
    }
    if let c = limits.cpuMillicores, c < minimumCPUMillicores {
      throw ResourceLimitsError("the cpu limit must be at least \(minimumCPUMillicores)m")
    }
    if let m = limits.memoryBytes, m < minimumMemoryBytes {
      throw ResourceLimitsError("the memory limit must be at least 16Mi")
    }
    return limits
  }

  static func text(_ v: Google_Protobuf_Value, _ path: String) throws(ResourceLimitsError) -> String {
    switch v.kind {
    case .stringValue(let s)?: return s.trimmingCharacters(in: .whitespaces)
    case .numberValue(let n)?: return n == n.rounded() && abs(n) < 1e15 ? String(Int64(n)) : String(n)
    default: throw ResourceLimitsError("\(path) must be a quantity string such as \"500m\" or \"512Mi\"")
    }
  }

  /// `2` → 2000, `0.5` → 500, `250m` → 250.
  static func cpuMillicores(_ v: Google_Protobuf_Value, _ path: String) throws(ResourceLimitsError) -> Int64 {
    let s = try text(v, path)
    let value: Double?
    if s.hasSuffix("m") { value = Double(s.dropLast()) } else { value = Double(s).map { $0 * 1000 } }
    guard let value, value.isFinite, value > 0, value < 1e9, !s.hasPrefix("+") else {
      throw ResourceLimitsError("\(path) \(s.debugDescription) is not a cpu quantity (examples: 2, 0.5, 250m)")
    }
    return Int64(value.rounded(.up))
  }

  /// `512Mi` → 536870912, `1G` → 1000000000, `1048576` → 1048576.
  static func memoryBytes(_ v: Google_Protobuf_Value, _ path: String) throws(ResourceLimitsError) -> Int64 {
    let s = try text(v, path)
    let units: [(String, Double)] = [
      ("Ki", 0x1p10), ("Mi", 0x1p20), ("Gi", 0x1p30), ("Ti", 0x1p40), ("Pi", 0x1p50), ("Ei", 0x1p60),
      ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15), ("E", 1e18),
    ]
    var number = Substring(s)
    var factor = 1.0
    if let (suffix, f) = units.first(where: { s.hasSuffix($0.0) }) {
      number = s.dropLast(suffix.count)
      factor = f
    }
    guard let n = Double(number), n.isFinite, n > 0, !number.hasPrefix("+"), n * factor < 0x1p62 else {
      throw ResourceLimitsError("\(path) \(s.debugDescription) is not a memory quantity (examples: 512Mi, 2Gi, 1G)")
    }
    return Int64((n * factor).rounded(.up))
  }
}

/// A resource limit that cannot be parsed or applied; `message` is shown to the user as is.
public struct ResourceLimitsError: Error, CustomStringConvertible, Sendable {
  /// What is wrong, naming the field (e.g. `template.resources.cpu`) and an accepted example.
  public let message: String
  /// An error with this message.
  public init(_ message: String) { self.message = message }
  /// The message.
  public var description: String { message }
}

/// Per-sandbox control groups of the local driver: one cgroup per sandbox under the gateway's own cgroup
/// (`<gateway's cgroup>/openshell/<name>`, the name `<sandbox id>-<gateway tag>` given by
/// `LocalComputeDriver.cgroupName(_:)`), in the cgroup v2 unified hierarchy or, on a v1 host,
/// in the `memory` and `cpu` hierarchies. The sandbox's outer bwrap process joins it before it execs
/// bwrap, so every process of the sandbox is inside from its first instruction.
///
/// Files written (kernel Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/): v2 `memory.max`,
/// `memory.swap.max` = 0, `cpu.max` = "<quota> 100000"; v1 `memory.limit_in_bytes`,
/// `memory.memsw.limit_in_bytes` (when swap accounting exists), `cpu.cfs_period_us` = 100000,
/// `cpu.cfs_quota_us`.
public struct SandboxCgroups: Sendable {
  enum Layout: Equatable {
    /// cgroup v2: the directory of the gateway's cgroup.
    case unified(String)
    /// cgroup v1: the directories of the gateway's cgroup in the memory and cpu hierarchies.
    case legacy(memory: String?, cpu: String?)
  }

  let layout: Layout
  /// CFS period (µs) of cpu limits: a limit of c millicores is a quota of c × 100 µs per 100 ms.
  static let period: Int64 = 100_000

  /// Finds the hierarchy; nil when this host has no usable (mounted, writable) cgroup hierarchy.
  /// - Parameters:
  ///   - mountRoot: where cgroup file systems are mounted (default `/sys/fs/cgroup`).
  ///   - selfCgroup: the content of `/proc/self/cgroup`.
  static func detect(mountRoot: String = "/sys/fs/cgroup", selfCgroup: String? = nil) -> SandboxCgroups? {
    let fm = FileManager.default
    let lines = (selfCgroup ?? (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? "")
      .split(separator: "\n")
    func path(for controller: String) -> String? {
      for line in lines {
        let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { continue }
        if controller.isEmpty ? parts[0] == "0" && parts[1].isEmpty : parts[1].split(separator: ",").contains(Substring(controller)) {
          return String(parts[2])
        }
      }
      return nil
    }
    if fm.fileExists(atPath: mountRoot + "/cgroup.controllers"), let own = path(for: "") {
      let dir = mountRoot + (own == "/" ? "" : own)
      guard fm.isWritableFile(atPath: dir) else { return nil }
      return SandboxCgroups(layout: .unified(dir))
    }
    func legacy(_ controller: String) -> String? {
      guard let own = path(for: controller) else { return nil }
      let dir = "\(mountRoot)/\(controller)" + (own == "/" ? "" : own)
      return fm.isWritableFile(atPath: dir) ? dir : nil
    }
    let memory = legacy("memory")
    let cpu = legacy("cpu")
    guard memory != nil || cpu != nil else { return nil }
    return SandboxCgroups(layout: .legacy(memory: memory, cpu: cpu))
  }

  /// A one-line description for messages, e.g. "cgroup v1 (memory, cpu)".
  var summary: String {
    switch layout {
    case .unified(let d): return "cgroup v2 at \(d)"
    case .legacy(let m, let c): return "cgroup v1 (" + [m != nil ? "memory" : nil, c != nil ? "cpu" : nil].compactMap { $0 }.joined(separator: ", ") + ")"
    }
  }

  /// Why `limits` cannot be applied here, or nil when they can.
  func unsupported(_ limits: ResourceLimits) -> String? {
    if case .legacy(let memory, let cpu) = layout {
      if limits.memoryBytes != nil, memory == nil { return "a memory limit needs the cgroup memory controller, which this host does not provide (\(summary))" }
      if limits.cpuMillicores != nil, cpu == nil { return "a cpu limit needs the cgroup cpu controller, which this host does not provide (\(summary))" }
    }
    return nil
  }

  /// Creates the sandbox's cgroup(s) and writes the limits.
  /// - Returns: the `cgroup.procs` files the sandbox's first process must join.
  /// - Throws: `ResourceLimitsError` with the file and errno text when the kernel refuses.
  func prepare(sandboxID: String, limits: ResourceLimits) throws(ResourceLimitsError) -> [String] {
    switch layout {
    case .unified(let parent):
      let base = parent + "/openshell"
      try makeDirectory(base)
      // Controllers must be enabled on the way down (cgroup-v2.rst "Top-down Constraint").
      var wanted: [String] = []
      if limits.memoryBytes != nil { wanted.append("+memory") }
      if limits.cpuMillicores != nil { wanted.append("+cpu") }
      for dir in [parent, base] where !wanted.isEmpty {
        try write(
          dir + "/cgroup.subtree_control", wanted.joined(separator: " "),
          hint: "the gateway's cgroup must be delegated with no processes of its own in it (systemd: Delegate=yes)")
      }
      let dir = base + "/" + sandboxID
      try makeDirectory(dir)
      if let m = limits.memoryBytes {
        try write(dir + "/memory.max", String(m))
        try? write(dir + "/memory.swap.max", "0")
      }
      if let c = limits.cpuMillicores { try write(dir + "/cpu.max", "\(c * Self.period / 1000) \(Self.period)") }
      return [dir + "/cgroup.procs"]
    case .legacy(let memory, let cpu):
      var procs: [String] = []
      if let m = limits.memoryBytes, let memory {
        let dir = memory + "/openshell/" + sandboxID
        try makeDirectory(memory + "/openshell")
        try makeDirectory(dir)
        try write(dir + "/memory.limit_in_bytes", String(m))
        if FileManager.default.fileExists(atPath: dir + "/memory.memsw.limit_in_bytes") {
          try? write(dir + "/memory.memsw.limit_in_bytes", String(m))
        }
        procs.append(dir + "/cgroup.procs")
      }
      if let c = limits.cpuMillicores, let cpu {
        let dir = cpu + "/openshell/" + sandboxID
        try makeDirectory(cpu + "/openshell")
        try makeDirectory(dir)
        try write(dir + "/cpu.cfs_period_us", String(Self.period))
        try write(dir + "/cpu.cfs_quota_us", String(c * Self.period / 1000))
        procs.append(dir + "/cgroup.procs")
      }
      return procs
    }
  }

  /// The directories of a sandbox's cgroups (existing or not).
  func directories(sandboxID: String) -> [String] {
    switch layout {
    case .unified(let parent): return [parent + "/openshell/" + sandboxID]
    case .legacy(let memory, let cpu): return [memory, cpu].compactMap { $0.map { $0 + "/openshell/" + sandboxID } }
    }
  }

  /// Removes a sandbox's cgroups (only possible once no process is left in them; rmdir(2) on a cgroup).
  func remove(sandboxID: String) {
    for dir in directories(sandboxID: sandboxID) { rmdir(dir) }
  }

  private func makeDirectory(_ path: String) throws(ResourceLimitsError) {
    if mkdir(path, 0o755) != 0 && errno != EEXIST {
      throw ResourceLimitsError("cannot create cgroup \(path): \(String(cString: strerror(errno)))")
    }
  }

  private func write(_ path: String, _ value: String, hint: String? = nil) throws(ResourceLimitsError) {
    let fd = open(path, O_WRONLY)
    guard fd >= 0 else { throw ResourceLimitsError("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let bytes = Array(value.utf8)
    guard Glibc.write(fd, bytes, bytes.count) == bytes.count else {
      let reason = String(cString: strerror(errno))
      throw ResourceLimitsError("cannot write \(value.debugDescription) to \(path): \(reason)" + (hint.map { " (\($0))" } ?? ""))
    }
  }
}
