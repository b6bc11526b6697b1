import Foundation
import PolicyKit
import SandboxConfinement
import SandboxProtocol
import SandboxSeccomp

/// What confinement adds to starting one workload process (issue 15, "Benchmark": ≤ 1 ms per exec),
/// measured without the gRPC round trip around it: the same `true` started with the supervisor's
/// `Spawner`, three ways, interleaved so that every way sees the same machine load:
///
/// - `direct`: `/bin/true` itself (the floor: one posix_spawn and exec);
/// - `setpriv`: through `setpriv --reuid --regid --clear-groups --no-new-privs` (util-linux), which is
///   how the supervisor started workloads before confinement (user switch only);
/// - `launcher`: through `openshell-sandbox-launch` (next to this binary) exactly as the supervisor
///   starts it: the restrictive default policy's plan, the seccomp program compiled once with
///   libseccomp, the environment on descriptor 3.
///
/// Prints wall time (spawn → exit, in the calling thread) and the CPU time each child used (wait4's
/// rusage: less sensitive to a loaded machine). Needs root and a `sandbox` host user (else 10001).
enum LauncherBench {
  static func run(count: Int) throws {
    let launcher = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
      .deletingLastPathComponent().appendingPathComponent(SandboxProtocol.launcherName).path
    guard FileManager.default.isExecutableFile(atPath: launcher) else {
      throw BenchError("launcher \(launcher) not found (build the openshell-sandbox-launch product)")
    }
    guard getuid() == 0 else { throw BenchError("--launcher needs root (the launcher switches users)") }
    let (uid, gid): (UInt32, UInt32) = getpwnam("sandbox").map { ($0.pointee.pw_uid, $0.pointee.pw_gid) } ?? (10001, 10001)
    let fs = PolicyRules.startupFilesystem(PolicyRules.restrictiveDefault)
    let plan = ConfinementPlan(
      user: "sandbox", uid: uid, gid: gid, groups: [gid], readOnly: fs.readOnly, readWrite: fs.readWrite,
      includeWorkdir: fs.includeWorkdir, workdir: "/tmp", landlockCompatibility: "best_effort")
    let t0 = ContinuousClock.now
    let program = try SeccompFilter.compile()
    let compileMS = (ContinuousClock.now - t0).ms
    let env = ["PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"]
    var envBytes: [UInt8] = []  // the supervisor's descriptor-3 format: KEY=VALUE\0…
    for (k, v) in env.sorted(by: { $0.key < $1.key }) { envBytes += Array("\(k)=\(v)".utf8) + [0] }
    let ways: [(String, () throws -> SpawnedProcess)] = [
      ("direct", { try Spawner.spawn("/bin/true", [], environment: env, newProcessGroup: true) }),
      (
        "setpriv",
        {
          try Spawner.spawn(
            "/usr/bin/setpriv", ["--reuid=\(uid)", "--regid=\(gid)", "--clear-groups", "--no-new-privs", "--", "/bin/true"], environment: env,
            newProcessGroup: true)
        }
      ),
      (
        "launcher",
        {
          try Spawner.spawn(
            launcher, plan.launcherArguments + ["--seccomp-bpf", program.hex, "--", "/bin/true"],
            environment: [SandboxProtocol.launchEnvironmentFDVariable: "3"], workingDirectory: "/tmp", newProcessGroup: true, fd3Data: envBytes)
        }
      ),
    ]
    var times = Array(repeating: [Double](), count: ways.count)
    var cpu = Array(repeating: [Double](), count: ways.count)
    for round in 0..<(count + 10) {
      for (i, way) in ways.enumerated() {
        let t = ContinuousClock.now
        let p = try way.1()
        let (status, used) = try wait(p.pid)
        guard status == 0 else { throw BenchError("\(way.0): `true` exited with status \(status)") }
        if round >= 10 {  // 10 warm-up rounds
          times[i].append((ContinuousClock.now - t).ms)
          cpu[i].append(used)
        }
      }
    }
    print(
      "process start of `true`, \(count) each, interleaved (spawn → exit; seccomp filter compiled once in \(String(format: "%.2f", compileMS)) ms, \(program.instructions) instructions)"
    )
    for (i, way) in ways.enumerated() {
      let name = way.0.padding(toLength: 8, withPad: " ", startingAt: 0)
      print(
        SandboxBench.summary("wall \(name)", times[i])
          + String(format: "; CPU p50 %.2f ms, p99 %.2f ms", ProxyBench.percentile(cpu[i], 0.5), ProxyBench.percentile(cpu[i], 0.99)))
    }
    let p = { (i: Int, q: Double) in ProxyBench.percentile(times[i], q) }
    let c = { (i: Int, q: Double) in ProxyBench.percentile(cpu[i], q) }
    print(
      String(
        format: "confinement adds (launcher − setpriv): wall p50 %.2f ms, p99 %.2f ms; CPU p50 %.2f ms", p(2, 0.5) - p(1, 0.5), p(2, 0.99) - p(1, 0.99),
        c(2, 0.5) - c(1, 0.5)))
    print(String(format: "launcher − direct: wall p50 %.2f ms; CPU p50 %.2f ms", p(2, 0.5) - p(0, 0.5), c(2, 0.5) - c(0, 0.5)))
  }

  /// wait4(2): the exit status and the CPU time (user + system, ms) the child used, execs included.
  static func wait(_ pid: pid_t) throws -> (Int32, Double) {
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 {
      guard errno == EINTR else { throw BenchError("wait4: \(String(cString: strerror(errno)))") }
    }
    func ms(_ t: timeval) -> Double { Double(t.tv_sec) * 1000 + Double(t.tv_usec) / 1000 }
    return (status, ms(usage.ru_utime) + ms(usage.ru_stime))
  }

  struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
  }
}
