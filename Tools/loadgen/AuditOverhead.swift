import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Gateway
import OpenShellAPI

/// A gateway served in-process on 127.0.0.1 (ephemeral port, mTLS, no compute driver).
struct InProcessGateway: Sendable {
  let running: RunningGateway
  let port: Int
  let task: Task<Void, Error>
  let dir: String

  static func start(dir: String, configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws -> InProcessGateway {
    var config = GatewayConfiguration(dataDirectory: dir)
    config.port = 0
    config.handleSignals = false
    config.shutdownGracePeriod = .seconds(2)
    config.computeDriver = "none"
    configure(&config)
    let (ready, continuation) = AsyncStream<(RunningGateway, Int)>.makeStream()
    let frozen = config
    let task = Task {
      defer { continuation.finish() }
      try await serve(frozen) { running, port in continuation.yield((running, port)) }
    }
    for await (running, port) in ready {
      return InProcessGateway(running: running, port: port, task: task, dir: dir)
    }
    _ = try await task.value
    throw ValidationErrorText("the gateway stopped before it was ready")
  }

  func stop() async {
    running.shutdown()
    _ = try? await task.value
  }

  /// A sandbox identity's client certificate and key files (for refused calls).
  func sandboxCertificate(_ id: String) throws -> (cert: String, key: String) {
    let issued = try running.pki!.issueSandboxCertificate(sandboxID: id)
    try issued.certificatePEM.write(toFile: dir + "/\(id).crt", atomically: true, encoding: .utf8)
    try issued.privateKeyPEM.write(toFile: dir + "/\(id).key", atomically: true, encoding: .utf8)
    return (dir + "/\(id).crt", dir + "/\(id).key")
  }
}

extension LoadGen {
  /// Audit overhead (issue 12): GetSandbox, CreateSandbox and refused calls (a sandbox identity calling
  /// GetSandbox: PERMISSION_DENIED, recorded as `audit.access_refused` windows; TLS handshakes without a client
  /// certificate, one connection each: ``RefusedHandshake``) against two gateways of the
  /// same build in the same process, one auditing refusals (the default) and one not
  /// (`GatewayConfiguration.recordRefusals = false`), cells interleaved on/off/off/on… over `rounds`; reports
  /// per RPC the median of the per-round overheads and their spread, and the load average before and after.
  func auditOverhead() async throws {
    let base = dataDir ?? NSTemporaryDirectory() + "openshell-loadgen-audit-\(getpid())"
    defer { if dataDir == nil { try? FileManager.default.removeItem(atPath: base) } }
    let on = try await InProcessGateway.start(dir: base + "/audit-on")
    let off = try await InProcessGateway.start(dir: base + "/audit-off") { $0.recordRefusals = false }
    let level = concurrency.split(separator: ",").compactMap { Int($0) }.first ?? 16
    print(header(dir: base, port: on.port, levels: [level]))
    print("audit overhead: two gateways (auditing of refusals on / off), \(rounds) rounds, cells interleaved\n")
    var rows: [[String]] = []
    var rates: [String: [Double]] = [:]
    var cpu: [String: [Double]] = [:]
    for round in 0..<rounds {
      for rpc in ["GetSandbox", "CreateSandbox", "refused GetSandbox", "refused TLS handshake"] {
        let order = round % 2 == 0 ? [(on, "on"), (off, "off")] : [(off, "off"), (on, "on")]
        for (gw, label) in order {
          var r = try await cell(gw, rpc: rpc, level: level, round: round)
          r.note = String(format: "%.0f µs CPU/req", (r.cpuPerRequest ?? 0) * 1e6)
          rows.append(r.row("\(rpc) [audit \(label)]", level))
          rates["\(rpc)|\(label)", default: []].append(Double(r.ok) / r.seconds)
          cpu["\(rpc)|\(label)", default: []].append(r.cpuPerRequest ?? 0)
        }
      }
    }
    await on.stop()
    await off.stop()
    print(Table.render(["rpc", "concurrency", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms", "note"], rows))
    // Each round measures both gateways back to back (ABBA order over rounds), so the per-round overhead
    // compares cells under nearly the same machine load; the median over rounds resists one disturbed cell.
    print("\nper round: overhead = (off - on) / off of that round's two cells; median over \(rounds) rounds, spread = min … max:")
    for rpc in ["GetSandbox", "CreateSandbox", "refused GetSandbox", "refused TLS handshake"] {
      let on = rates["\(rpc)|on"] ?? []
      let off = rates["\(rpc)|off"] ?? []
      let overheads = zip(on, off).map { a, b in b > 0 ? (b - a) / b * 100 : 0 }
      print(
        "  " + rpc.padding(toLength: 22, withPad: " ", startingAt: 0)
          + String(
            format: "audit on %8.0f   off %8.0f req/s (medians)   overhead median %+.1f %%   spread %+.1f … %+.1f %%", median(on),
            median(off), median(overheads), overheads.min() ?? 0, overheads.max() ?? 0))
    }
    // CPU per request (the whole process: client and the gateway under test) moves much less with the
    // machine's load than req/s does.
    print("CPU per request (process: client + gateway), median over rounds; overhead = (on - off) / off:")
    for rpc in ["GetSandbox", "CreateSandbox", "refused GetSandbox", "refused TLS handshake"] {
      let on = median(cpu["\(rpc)|on"] ?? []) * 1e6
      let off = median(cpu["\(rpc)|off"] ?? []) * 1e6
      print(
        "  " + rpc.padding(toLength: 22, withPad: " ", startingAt: 0)
          + String(format: "audit on %6.1f µs   off %6.1f µs   overhead %+.1f %%", on, off, off > 0 ? (on - off) / off * 100 : 0))
    }
    let load = Self.loadAverage()
    print("load average \(load) at the end")
  }

  private func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    guard !s.isEmpty else { return 0 }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
  }

  /// One measured cell against `gw`: a fresh connection, a warm-up, then `duration` seconds of load.
  private func cell(_ gw: InProcessGateway, rpc: String, level: Int, round: Int) async throws -> RunResult {
    let duration = self.duration
    let scope = Openshell_Datamodel_V1_WorkspaceSelector.with { $0.workspace = "default" }
    if rpc == "refused TLS handshake" {
      let client = try RefusedHandshake(caFile: gw.dir + "/pki/ca.crt", port: gw.port)
      for _ in 0..<20 { try await client.run() }
      return try await runConcurrent(concurrency: level, seconds: duration) { try await client.run() }
    }
    let sandboxCert = rpc.hasPrefix("refused") ? try gw.sandboxCertificate("loadgen-sb") : nil
    return try await withClients(port: gw.port, pki: gw.dir + "/pki", count: connections, certificate: sandboxCert) { apis in
      let ticket = Ticket()
      let tag = "r\(round)-\(UInt32(truncatingIfNeeded: getpid()))"
      switch rpc {
      case "GetSandbox":
        if round == 0 {
          _ = try? await apis[0].createSandbox(
            .with {
              $0.name = "loadgen-target"; $0.workspaceScope = scope
            })
        }
        for _ in 0..<50 {
          _ = try await apis[0].getSandbox(
            .with {
              $0.name = "loadgen-target"; $0.workspaceScope = scope
            })
        }
        return try await Self.withCPU {
          try await runConcurrent(concurrency: level, seconds: duration) {
            _ = try await apis[ticket.next() % apis.count].getSandbox(
              .with {
                $0.name = "loadgen-target"; $0.workspaceScope = scope
              })
          }
        }
      case "CreateSandbox":
        for i in 0..<10 {
          _ = try await apis[0].createSandbox(
            .with {
              $0.name = "warm-\(tag)-\(i)"; $0.workspaceScope = scope
            })
        }
        return try await Self.withCPU {
          try await runConcurrent(concurrency: level, seconds: duration) {
            let n = ticket.next()
            _ = try await apis[n % apis.count].createSandbox(
              .with {
                $0.name = "lg-\(tag)-\(n)"; $0.workspaceScope = scope
              })
          }
        }
      default:
        @Sendable func refused(_ api: Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>) async throws {
          do {
            _ = try await api.getSandbox(
              .with {
                $0.name = "loadgen-target"; $0.workspaceScope = scope
              })
            throw RPCError(code: .internalError, message: "a sandbox identity was allowed to call GetSandbox")
          } catch let e as RPCError where e.code == .permissionDenied {}
        }
        for _ in 0..<50 { try await refused(apis[0]) }
        return try await Self.withCPU { try await runConcurrent(concurrency: level, seconds: duration) { try await refused(apis[ticket.next() % apis.count]) } }
      }
    }
  }

  /// `body`'s result with the CPU the process spent during it per answered request.
  private static func withCPU(_ body: () async throws -> RunResult) async throws -> RunResult {
    let start = processCPUSeconds()
    var r = try await body()
    r.cpuPerRequest = (processCPUSeconds() - start) / Double(max(r.ok, 1))
    return r
  }
}
