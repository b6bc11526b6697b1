import Foundation
import GRPCNIOTransportHTTP2
import OpenShellAPI

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell-loadgen --mixed`: GetSandbox and CreateSandbox at the same time, each at the first
/// `--concurrency` level for `--duration` seconds, against `openshell gateway serve --compute-driver none`
/// run as its own process (`--gateway-binary`, so two builds can be compared with one client), after
/// `--preload` creates (the state a read and an apply share).
///
/// What it shows (issue 14): whether reads queue behind the commands' applies and whether a read's copy of
/// the projection makes the next apply copy the state (with `--get-only`: GetSandbox alone, the gateway's
/// CPU per read). Prints req/s and p50/p99 per RPC, and the gateway
/// process's CPU (user + system, from /proc/PID/stat) per request of the cell.
extension LoadGen {
  func mixedLoad(level: Int) async throws {
    let binary = gatewayBinary ?? (CommandLine.arguments[0] as NSString).deletingLastPathComponent + "/openshell"
    let dir = dataDir ?? NSTemporaryDirectory() + "openshell-loadgen-mixed-\(getpid())"
    defer {
      // The gateway's output goes beside its data directory (``GatewayProcess``).
      if dataDir == nil { for path in [dir, dir + ".out"] { try? FileManager.default.removeItem(atPath: path) } }
    }
    let gw = try GatewayProcess.start(binary: binary, dataDirectory: dir)
    defer { gw.stop() }
    _ = try await firstServed(gw, sandbox: nil)
    let duration = self.duration
    let load = { Self.loadAverage() }
    print("openshell-loadgen --mixed: gateway \(binary) (pid \(gw.pid)), c=\(level) each, \(duration) s, load \(load())")
    let (get, create, cpu) = try await withClients(port: gw.port, pki: dir + "/pki", count: connections) { apis in
      let scope = Openshell_Datamodel_V1_WorkspaceSelector.with { $0.workspace = "default" }
      let api = apis[0]
      _ = try await api.createSandbox(
        .with {
          $0.name = "mixed-target"; $0.workspaceScope = scope
        })
      let names = Ticket()
      let preload = self.preload
      try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<64 {
          group.addTask {
            while true {
              let n = names.next()
              if n >= preload { return }
              _ = try await api.createSandbox(
                .with {
                  $0.name = "pre-\(n)"; $0.workspaceScope = scope
                })
            }
          }
        }
        try await group.waitForAll()
      }
      let pick = Ticket()
      let before = Self.cpuSeconds(pid: gw.pid)
      async let g = runConcurrent(concurrency: level, seconds: duration) {
        _ = try await apis[pick.next() % apis.count].getSandbox(
          .with {
            $0.name = "mixed-target"; $0.workspaceScope = scope
          })
      }
      let creates = !getOnly
      async let c = runConcurrent(concurrency: creates ? level : 0, seconds: duration) {
        let n = names.next()
        _ = try await apis[pick.next() % apis.count].createSandbox(
          .with {
            $0.name = "mx-\(n)"; $0.workspaceScope = scope; $0.labels = ["bench": "mixed"]
          })
      }
      let (get, create) = try await (g, c)
      return (get, create, Self.cpuSeconds(pid: gw.pid) - before)
    }
    print(
      Table.render(
        ["rpc", "concurrency", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms", "-"],
        [get.row("GetSandbox (mixed)", level)] + (getOnly ? [] : [create.row("CreateSandbox (mixed)", level)])))
    print(
      String(
        format: "gateway CPU: %.1f µs per request (%.2f s for %d requests); load %@ at end", cpu / Double(max(get.ok + create.ok, 1)) * 1e6, cpu,
        get.ok + create.ok, load()))
  }

  /// User + system CPU seconds of process `pid` so far (/proc/PID/stat fields 14 and 15, in clock ticks).
  static func cpuSeconds(pid: pid_t) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After the command name: state is field 3, so utime (14) and stime (15) are at offsets 11 and 12.
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
  }
}
