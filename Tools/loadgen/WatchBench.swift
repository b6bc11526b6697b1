import EventLog
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Gateway
import OpenShellAPI
import Projections
import Synchronization

extension LoadGen {
  /// WatchEvents (issue 12): builds a log of `events` audit records, serves it, and measures over mTLS on
  /// loopback (1) the catch-up rate of `WatchEvents(from_seq 1)` to the head, (2) the live lag while records are
  /// appended at `--live-rate` per second for `--duration` seconds: receipt time − the record's timestamp (the
  /// writer stamps it when the commit starts, so the lag includes the fsync'd commit). The log-level
  /// catch-up subscription without gRPC is measured too, to show where the time goes.
  func watchBenchmark(events n: Int) async throws {
    let dir = dataDir ?? NSTemporaryDirectory() + "openshell-loadgen-watch-\(getpid())"
    defer { if dataDir == nil { try? FileManager.default.removeItem(atPath: dir) } }
    var t0 = nowNs()
    try await Self.buildAuditLog(dir + "/log", count: n)
    let built = Double(nowNs() - t0) / 1e9
    let gw = try await InProcessGateway.start(dir: dir) { $0.checkpointInterval = 0 }
    let log = gw.running.store.log
    let head = log.headSeq
    print(header(dir: dir, port: gw.port, levels: [1]))
    print(
      String(
        format: "log: %d records (%d audit records appended in %.1f s), %.1f MiB on disk\n", head, n, built,
        Double((try? FileManager.default.attributesOfItem(atPath: dir + "/log/data.mdb")[.size] as? Int) ?? 0) / 1_048_576))

    // Library level: the catch-up subscription alone.
    t0 = nowNs()
    var seen: UInt64 = 0
    for try await item in log.subscribe(from: 1) {
      if case .record(let r) = item { seen = r.seq; if seen >= head { break } }
    }
    let libRate = Double(head) / (Double(nowNs() - t0) / 1e9)

    let total = Int(Double(liveRate) * duration)
    let result = try await withGRPCClients(port: gw.port, pki: dir + "/pki", count: 1) { clients in
      let audit = Openshell_Audit_V1_AuditService.Client(wrapping: clients[0])
      let start = nowNs()
      var options = CallOptions.defaults
      options.timeout = nil
      let liveRate = self.liveRate
      let (caughtUpNs, lags, inOrder, writer) = try await audit.watchEvents(.with { $0.fromSeq = 1 }, options: options) { response in
        var caughtUpNs: UInt64 = 0
        var lags: [UInt64] = []
        lags.reserveCapacity(total)
        var last: UInt64 = 0
        var inOrder = true
        var writer: Task<Void, Error>?
        for try await e in response.messages {
          if e.seq != last + 1 { inOrder = false }
          last = e.seq
          if e.seq == head {
            caughtUpNs = nowNs() - start
            writer = Task { try await Self.appendLive(log, count: total, perSecond: liveRate) }
          } else if e.seq > head {
            let now = Self.wallNs()
            lags.append(now > e.timestampNs ? now - e.timestampNs : 0)
            if lags.count >= total { break }
          }
        }
        return (caughtUpNs, lags, inOrder, writer)
      }
      try await writer?.value
      return (caughtUpNs, lags, inOrder)
    }
    await gw.stop()
    let (caughtUpNs, lags, inOrder) = result
    let sorted = lags.sorted()
    func p(_ q: Double) -> Double { sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(q * Double(sorted.count)))]) / 1e6 }
    print(
      Table.render(
        ["measure", "value"],
        [
          ["catch-up, gRPC WatchEvents (events/s)", String(format: "%.0f", Double(head) / (Double(caughtUpNs) / 1e9))],
          ["catch-up, log subscription alone (events/s)", String(format: "%.0f", libRate)],
          ["live: events appended / received", "\(total) / \(lags.count) at \(liveRate)/s"],
          ["live lag p50 / p99 / max (ms)", String(format: "%.2f / %.2f / %.2f", p(0.5), p(0.99), p(1.0))],
          ["every seq once, in order", inOrder ? "yes" : "NO"],
        ]))
  }

  /// Appends `count` audit records (no projection state: refusals, disclosures, exec start/end) in batches of
  /// 1,000 records (one commit each) to a new log at `path`.
  static func buildAuditLog(_ path: String, count: Int) async throws {
    var o = EventLog.Options()
    o.durability = .noSync
    let log = try EventLog.open(directory: path, options: o)
    defer { log.close() }
    var batch: [NewEvent] = []
    batch.reserveCapacity(1000)
    var t: UInt64 = 1_700_000_000_000_000_000
    for i in 0..<count {
      t += 1_000_000
      batch.append(sample(i).newEvent(actor: i % 3 == 0 ? "sandbox:sb-\(i % 97)" : "operator:CN=bench/sha256:00", requestID: "r\(i)", timestampNs: t))
      if batch.count == 1000 || i == count - 1 {
        _ = try await log.append(batch)
        batch.removeAll(keepingCapacity: true)
      }
    }
  }

  /// The i-th record of the benchmark log: a mix of the four audit kinds.
  static func sample(_ i: Int) -> GatewayEvent {
    let sb = "sb-\(i % 97)"
    switch i % 4 {
    case 0:
      return GatewayEvent(
        .accessRefused(
          .with {
            $0.identity = "sandbox:\(sb)"; $0.peer = "ipv4:127.0.0.1:\(40000 + i % 20000)"; $0.rpc = "openshell.v1.OpenShell/ListSandboxes"
            $0.code = "PERMISSION_DENIED"; $0.reason = "not available to sandbox identities"; $0.count = UInt64(1 + i % 50)
          }))
    case 1:
      return GatewayEvent(
        .credentialsDisclosed(
          .with {
            $0.rpc = "GetSandboxProviderEnvironment"; $0.recipient = "sandbox:\(sb)"; $0.sandboxID = sb; $0.providers = ["github"]; $0.keys = ["GITHUB_TOKEN"]
          }))
    case 2:
      return GatewayEvent(
        .execStarted(
          .with {
            $0.sandboxID = sb; $0.execID = "e\(i)"; $0.command = ["sh", "-c", "make test -j\(i % 8)"]
          }))
    default:
      return GatewayEvent(
        .execEnded(
          .with {
            $0.sandboxID = sb; $0.execID = "e\(i - 1)"; $0.exitCode = Int32(i % 3); $0.durationMs = UInt64(i % 5000)
          }))
    }
  }

  /// Wall-clock ns since the epoch (the clock record timestamps use).
  static func wallNs() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1e9) }

  /// Appends `count` exec records one at a time at `perSecond` (paced by deadline, not by sleep length).
  static func appendLive(_ log: EventLog, count: Int, perSecond: Int) async throws {
    let start = nowNs()
    for i in 0..<count {
      let due = start + UInt64(i) * 1_000_000_000 / UInt64(perSecond)
      let now = nowNs()
      if due > now { try await Task.sleep(for: .nanoseconds(Int(due - now))) }
      _ = try await log.append([sample(2 + 4 * i).newEvent(actor: "operator:CN=bench/sha256:00", requestID: "live\(i)", timestampNs: wallNs())])
    }
  }
}
