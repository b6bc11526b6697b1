import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Gateway
import OpenShellAPI
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell-loadgen --issue14`: issue 14's request-path rows, measured in one run, printed as one table
/// (measure, ours, peer, ratio, target, met) between ``begin`` and ``end`` for `scripts/bench.sh`.
///
/// - GetSandbox and CreateSandbox against the in-process gateway (mTLS, no compute driver, log `.sync`),
///   each CreateSandbox level followed by etcd Put at the same level (``EtcdPeer``, plaintext HTTP/2);
/// - RSS of `openshell gateway serve --compute-driver none` just after start-up (idle) and after
///   `--rss-sandboxes` CreateSandbox calls;
/// - restart: the same binary on a data directory whose log holds `--events` records (``RestartLog``),
///   timed from exec to the first GetSandbox answered OK, after a graceful stop that saved the snapshot.
/// Targets (issue 14): GetSandbox c=64 ≥ 30k req/s, p99 at c=1 ≤ 300 µs; CreateSandbox c=64 ≥ 10k req/s
/// and ≥ 1× etcd Put; restart ≤ 0.5 s; RSS ≤ 60 MB idle, ≤ 200 MB with 10k sandboxes.
extension LoadGen {
  static let begin = "== Issue 14 targets (request path) =="
  static let end = "== end of targets =="

  /// One row of the targets table.
  struct TargetRow {
    var measure: String
    var ours: String
    var peer: String = "-"
    var ratio: String = "-"
    var target: String
    var met: String
  }

  func issue14Targets(levels requested: [Int]) async throws {
    let levels = Array(Set(requested + [1, 64])).sorted()
    let binary = gatewayBinary ?? (CommandLine.arguments[0] as NSString).deletingLastPathComponent + "/openshell"
    guard FileManager.default.isExecutableFile(atPath: binary) else {
      throw ValidationErrorText("gateway binary \(binary) not found (build the openshell product, or pass --gateway-binary)")
    }
    if let dir = restartOnly {
      var warm: [Double] = []
      for _ in 0..<restarts {
        let gw = try GatewayProcess.start(binary: binary, dataDirectory: dir)
        do { warm.append(try await firstServed(gw, sandbox: "restart-target")) } catch {
          gw.stop()
          throw error
        }
        gw.stop()
      }
      let load = Self.loadAverage()
      print("restart to first GetSandbox on \(dir): \(warm.map { String(format: "%.3f", $0) }.joined(separator: ", ")) s (load \(load))")
      return
    }
    let work = NSTemporaryDirectory() + "openshell-loadgen-i14-\(getpid())"
    try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    defer { if keepWork { print("work directory kept: \(work)") } else { try? FileManager.default.removeItem(atPath: work) } }

    // 1. Throughput beside etcd, interleaved per level.
    let etcd = try await EtcdPeer.start(binary: etcdBinary)
    let cells: [Cell]
    do {
      cells = try await inProcessCells(dir: work + "/inproc", levels: levels, etcd: etcd)
    } catch {
      etcd.stop()
      throw error
    }
    etcd.stop()
    print(
      Table.render(
        ["rpc", "concurrency", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms", "calls/commit"], cells.map { $0.result.row($0.rpc, $0.level) }))
    print(
      "(etcd Put: \(etcdValueNote.value); etcd over plaintext HTTP/2, ours over mTLS; 'applied' = etcd's revision delta, its figure in the targets; its errors are calls grpc-swift failed before they reached etcd)"
    )

    // 2. RSS idle and with N sandboxes.
    let rss = try await measureRSS(binary: binary, dir: work + "/rss")
    print(String(format: "RSS: idle %.1f MB, with %d sandboxes %.1f MB", rss.idle / 1e6, rssSandboxes, rss.full / 1e6))

    // 3. Restart on a long log.
    let restart = try await measureRestart(binary: binary, dir: work + "/restart")
    print(
      String(
        format: "restart to first GetSandbox, %d-event log: first start (no snapshot, full replay) %.3f s; restarts %@ s",
        events, restart.cold, restart.warm.map { String(format: "%.3f", $0) }.joined(separator: ", ")))

    let rows = targetRows(cells: cells, rss: rss, restart: restart)
    print("\n\(Self.begin)")
    print(Table.render(["measure", "ours", "peer", "ratio", "target", "met"], rows.map { [$0.measure, $0.ours, $0.peer, $0.ratio, $0.target, $0.met] }))
    print(Self.end)
  }

  func targetRows(cells: [Cell], rss: (idle: Double, full: Double), restart: (cold: Double, warm: [Double])) -> [TargetRow] {
    func cell(_ rpc: String, _ level: Int) -> RunResult? { cells.first { $0.rpc == rpc && $0.level == level }?.result }
    var rows: [TargetRow] = []
    if let g = cell("GetSandbox", 64) {
      rows.append(TargetRow(measure: "GetSandbox, mTLS, c=64", ours: f(g.perSecond) + " req/s", target: "≥ 30000 req/s", met: yes(g.perSecond >= 30_000)))
    }
    if let g = cell("GetSandbox", 1) {
      let p99 = g.percentileMs(99) * 1000
      rows.append(TargetRow(measure: "GetSandbox, mTLS, c=1, p99", ours: f(p99) + " µs", target: "≤ 300 µs", met: yes(p99 <= 300)))
    }
    for level in cells.filter({ $0.rpc == "CreateSandbox" }).map(\.level) {
      guard let c = cell("CreateSandbox", level) else { continue }
      // etcd's figure: Puts it applied (revision delta) per second.
      let peer = cell(EtcdPeer.rpcName, level).map { Double($0.applied ?? $0.ok) / $0.seconds }
      let ratio = peer.map { c.perSecond / max($0, 1e-9) }
      let main = level == 64
      rows.append(
        TargetRow(
          measure: "CreateSandbox, durable, no compute, c=\(level) (peer: etcd Put)", ours: f(c.perSecond) + " req/s",
          peer: peer.map { f($0) + " req/s" } ?? "-", ratio: ratio.map { String(format: "%.2fx", $0) } ?? "-",
          target: main ? "≥ 10000 and ≥ 1.00×" : "-", met: main ? yes(c.perSecond >= 10_000 && (ratio ?? 0) >= 1) : "-"))
    }
    let warm = restart.warm.sorted()[restart.warm.count / 2]
    rows.append(
      TargetRow(
        measure: "gateway restart to serving, \(events)-event log (median of \(restart.warm.count))", ours: String(format: "%.3f s", warm),
        target: "≤ 0.5 s", met: yes(warm <= 0.5)))
    rows.append(TargetRow(measure: "gateway RSS idle", ours: String(format: "%.1f MB", rss.idle / 1e6), target: "≤ 60 MB", met: yes(rss.idle <= 60e6)))
    rows.append(
      TargetRow(
        measure: "gateway RSS, \(rssSandboxes) sandboxes in state", ours: String(format: "%.1f MB", rss.full / 1e6), target: "≤ 200 MB",
        met: yes(rss.full <= 200e6)))
    return rows
  }

  private func f(_ v: Double) -> String { String(format: "%.0f", v) }
  private func yes(_ b: Bool) -> String { b ? "yes" : "NO" }

  /// The throughput cells against an in-process gateway, each CreateSandbox level followed by etcd Put.
  func inProcessCells(dir: String, levels: [Int], etcd: EtcdPeer) async throws -> [Cell] {
    let gw = try await InProcessGateway.start(dir: dir) { [serverEventLoop] in $0.rpcTasksOnEventLoop = serverEventLoop }
    let (running, port) = (gw.running, gw.port)
    let log = running.store.log
    let duration = self.duration
    do {
      let cells = try await measureCells(
        port: port, pki: dir + "/pki", levels: levels,
        commitCounters: {
          let w = log.writerStats
          return (w.commits, w.appendCalls)
        },
        after: { level in
          // The value is the payload of the CreateSandbox event just recorded (its protobuf bytes).
          let value = (try? log.record(at: log.headSeq)).map { Data($0.payload) } ?? Data(count: 200)
          etcdValueNote.set("value \(value.count) B, the payload of a recorded sandbox.requested event")
          let put = try await etcd.putCell(concurrency: level, seconds: duration, value: value)
          return Cell(rpc: EtcdPeer.rpcName, level: level, result: put)
        })
      await gw.stop()
      return cells
    } catch {
      await gw.stop()
      throw error
    }
  }

  /// RSS of the gateway process right after start-up, then after `rssSandboxes` creates (c=64).
  func measureRSS(binary: String, dir: String) async throws -> (idle: Double, full: Double) {
    let gw = try GatewayProcess.start(binary: binary, dataDirectory: dir)
    defer { gw.stop() }
    _ = try await firstServed(gw, sandbox: nil)
    try await Task.sleep(for: .seconds(2))
    let idle = gw.rssBytes()
    let total = rssSandboxes
    try await withClients(port: gw.port, pki: dir + "/pki", count: 1) { apis in
      let scope = Openshell_Datamodel_V1_WorkspaceSelector.with { $0.workspace = "default" }
      let ticket = Ticket()
      try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<64 {
          group.addTask {
            while true {
              let n = ticket.next()
              if n >= total { return }
              _ = try await apis[0].createSandbox(
                .with {
                  $0.name = "rss-\(n)"; $0.workspaceScope = scope; $0.labels = ["bench": "rss"]
                })
            }
          }
        }
        try await group.waitForAll()
      }
    }
    try await Task.sleep(for: .seconds(2))
    return (idle, gw.rssBytes())
  }

  /// Seconds from exec to the first GetSandbox answered OK, on a log of `events` records: one start
  /// without a snapshot (the log was written behind the gateway's back), then `restarts` after graceful stops.
  func measureRestart(binary: String, dir: String) async throws -> (cold: Double, warm: [Double]) {
    let first = try GatewayProcess.start(binary: binary, dataDirectory: dir)
    do {
      _ = try await firstServed(first, sandbox: nil)
      try await withClients(port: first.port, pki: dir + "/pki", count: 1) { apis in
        _ = try await apis[0].createSandbox(
          .with {
            $0.name = "restart-target"; $0.workspaceScope = .with { $0.workspace = "default" }
          })
      }
    } catch {
      first.stop()
      throw error
    }
    first.stop()
    try RestartLog.fill(dataDirectory: dir, total: events)
    let cold = try GatewayProcess.start(binary: binary, dataDirectory: dir)
    let coldSeconds: Double
    do { coldSeconds = try await firstServed(cold, sandbox: "restart-target") } catch {
      cold.stop()
      throw error
    }
    cold.stop()
    var warm: [Double] = []
    for _ in 0..<restarts {
      let gw = try GatewayProcess.start(binary: binary, dataDirectory: dir)
      do { warm.append(try await firstServed(gw, sandbox: "restart-target")) } catch {
        gw.stop()
        throw error
      }
      gw.stop()
    }
    return (coldSeconds, warm)
  }

  /// Seconds from the process's exec to the first OK answer of GetSandbox(`sandbox`) (or of
  /// ListSandboxes when nil): polls the port, then calls over mTLS until it succeeds.
  func firstServed(_ gw: GatewayProcess, sandbox: String?) async throws -> Double {
    try await gw.waitListening()
    let deadline = ContinuousClock.now + .seconds(60)
    while true {
      do {
        try await withClients(port: gw.port, pki: gw.dataDirectory + "/pki", count: 1) { apis in
          let scope = Openshell_Datamodel_V1_WorkspaceSelector.with { $0.workspace = "default" }
          if let sandbox {
            _ = try await apis[0].getSandbox(
              .with {
                $0.name = sandbox; $0.workspaceScope = scope
              })
          } else {
            _ = try await apis[0].listSandboxes(.with { $0.workspaceScope = scope })
          }
        }
        let d = ContinuousClock.now - gw.started
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
      } catch {
        if ContinuousClock.now > deadline || gw.exited() { throw error }
        try await Task.sleep(for: .milliseconds(2))
      }
    }
  }
}

/// What value the etcd cells put (set by the first etcd cell, printed under the table).
let etcdValueNote = NoteBox()

/// A string shared between tasks.
final class NoteBox: Sendable {
  private let storage = Mutex("")
  var value: String { storage.withLock { $0 } }
  func set(_ s: String) { storage.withLock { $0 = s } }
}

extension EtcdPeer {
  /// The rpc column of etcd's cells.
  static let rpcName = "etcd Put (plaintext)"
}

extension RunResult {
  /// Successful calls per second.
  var perSecond: Double { Double(ok) / seconds }

  /// The `p`-th percentile latency in ms.
  func percentileMs(_ p: Double) -> Double { percentile(latenciesNs.sorted(), p) }
}
