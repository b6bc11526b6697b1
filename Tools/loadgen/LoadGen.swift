import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Gateway
import NIOCore
import NIOPosix
import OpenShellAPI
import RelayTransport
import Synchronization

/// Starts a gateway in-process (mTLS on 127.0.0.1, ephemeral port, no compute driver) and drives it
/// over one HTTP/2 connection with the operator certificate: GetSandbox and CreateSandbox at several
/// concurrency levels, reporting req/s and latency percentiles.
@main
struct LoadGen: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "openshell-loadgen",
    abstract: "gRPC load against an in-process gateway over mTLS on loopback.")

  /// `--nio-executor` must act before any task starts (``NIOExecutor``).
  static func main() async {
    if CommandLine.arguments.contains("--nio-executor") { NIOExecutor.install() }
    await main(nil)
  }

  @Flag(help: "Run every task (gateway and client) on NIO's event loops instead of Swift's default pool (comparison runs).")
  var nioExecutor = false

  @Option(help: "Concurrent in-flight requests per cell, comma separated.")
  var concurrency: String = "1,16,64"

  @Option(help: "Seconds per cell (one RPC at one concurrency).")
  var duration: Double = 5

  @Option(help: "Gateway data directory (default: a fresh temporary directory, removed afterwards).")
  var dataDir: String?

  @Option(help: "HTTP/2 connections (clients); requests are spread over them round-robin.")
  var connections: Int = 1

  @Flag(
    help:
      "Audit overhead: GetSandbox, CreateSandbox and refused calls against a gateway auditing refusals and one not, interleaved (first --concurrency level).")
  var auditOverhead = false

  @Flag(
    help:
      "Issue 14's request-path rows: GetSandbox/CreateSandbox beside etcd Put (same levels), restart time on a --events log, RSS idle and with --rss-sandboxes; prints one targets table."
  )
  var issue14 = false

  @Flag(
    help:
      "The floor under GetSandbox: our gateway over mTLS beside a bare grpc-swift-2 server (the gateway's transport and listener without its own layers, fixed response) over mTLS and plaintext, interleaved per --concurrency level; req/s, p50/p99 µs, process CPU µs per request."
  )
  var floor = false

  @Flag(help: "GetSandbox and CreateSandbox at once (first --concurrency level each) against --gateway-binary run as a process.")
  var mixed = false

  @Flag(
    help:
      "Client connections on an event loop of their own, with the calls' tasks on that loop too (no hops between the loop and Swift's pool on the client side; comparison runs)."
  )
  var clientEventLoop = false

  @Flag(
    help:
      "Client without grpc-swift's flush coalescing (by default each flush is deferred up to 100 µs to batch writes: at c=1 a delay in the client, at c=64 fewer writes)."
  )
  var clientNoFlushCoalescing = false

  @Flag(help: "In-process gateway: all connections on one event loop, the RPCs' tasks on it (GatewayConfiguration.rpcTasksOnEventLoop).")
  var serverEventLoop = false

  @Flag(help: "With --mixed: GetSandbox only, no CreateSandbox cell (the gateway's CPU per read).")
  var getOnly = false

  @Option(help: "Sandboxes --mixed creates before its cell.")
  var preload: Int = 5_000

  @Option(help: "Events in the log of the --issue14 restart measure.")
  var events: Int = 1_000_000

  @Option(help: "Sandboxes in state for the --issue14 RSS measure.")
  var rssSandboxes: Int = 10_000

  @Option(help: "Timed restarts in --issue14 (median reported).")
  var restarts: Int = 3

  @Option(help: "The gateway binary --issue14 and --mixed run as a process (default: openshell next to this executable).")
  var gatewayBinary: String?

  @Option(help: "The etcd binary of the --issue14 peer (default: etcd on PATH).")
  var etcdBinary: String?

  @Option(
    help:
      "Only --issue14's restart measure, on this data directory: restarts of a gateway whose log is already filled (made by an earlier run with --keep-work: WORK/restart), no cold start."
  )
  var restartOnly: String?

  @Flag(help: "Keep --issue14's work directory (data directories and the gateway's output) and print its path.")
  var keepWork = false

  @Option(help: "Rounds of the --audit-overhead comparison (each: every RPC against both gateways).")
  var rounds: Int = 3

  @Option(help: "WatchEvents benchmark: catch-up rate from a log of this many events, then live lag (e.g. 1000000).")
  var watchEvents: Int?

  @Option(
    help:
      "The --watch-events log: lifecycle (what a busy gateway writes: sandbox lifecycles with their audit records, providers, policies, settings) or audit (the four commonest audit kinds only)."
  )
  var watchMix: WatchMix = .lifecycle

  @Flag(help: .hidden)  // comparison only: mutation kinds decoded, as before their fast summaries existed
  var watchDecodeMutations = false

  @Option(help: "Events appended per second during the live-lag phase of --watch-events.")
  var liveRate: Int = 1000

  func run() async throws {
    let levels = concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !levels.isEmpty, levels.allSatisfy({ $0 > 0 }), duration > 0, connections > 0, rounds > 0, liveRate > 0, preload >= 0 else {
      throw ValidationError("bad --concurrency, --duration, --connections, --rounds, --live-rate or --preload")
    }
    // One mode per run: a second one named beside the first was silently ignored before.
    let modes = [
      ("--audit-overhead", auditOverhead), ("--issue14", issue14), ("--floor", floor), ("--mixed", mixed),
      ("--watch-events", watchEvents != nil),
    ].filter(\.1).map(\.0)
    guard modes.count <= 1 else { throw ValidationError("choose one of \(modes.joined(separator: ", ")), not several") }
    if auditOverhead { return try await auditOverhead() }
    if issue14 { return try await issue14Targets(levels: levels) }
    if floor { return try await floorCells(levels: levels) }
    if mixed { return try await mixedLoad(level: levels[0]) }
    if let watchEvents {
      guard watchEvents > 0 else { throw ValidationError("--watch-events must be positive") }
      return try await watchBenchmark(events: watchEvents)
    }
    let temporary = dataDir == nil
    let dir = dataDir ?? NSTemporaryDirectory() + "openshell-loadgen-\(getpid())"
    defer { if temporary { try? FileManager.default.removeItem(atPath: dir) } }

    // As the header says: no compute driver (the local driver would start a sandbox per CreateSandbox and
    // measure that instead of the request path); InProcessGateway serves without one.
    let gw = try await InProcessGateway.start(dir: dir) { [serverEventLoop] in $0.rpcTasksOnEventLoop = serverEventLoop }
    let (running, port) = (gw.running, gw.port)

    print(header(dir: dir, port: port, levels: levels))
    var rows: [[String]] = []
    do {
      let log = running.store.log
      rows = try await measure(port: port, pki: dir + "/pki", levels: levels) {
        let w = log.writerStats
        return (w.commits, w.appendCalls)
      }
    } catch {
      await gw.stop()
      throw error
    }
    await gw.stop()
    print(
      Table.render(
        ["rpc", "concurrency", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms", "calls/commit"], rows))
    print("(calls/commit: CreateSandbox append calls per fsync'd log commit — group commit at work)")
  }

  /// The 1, 5 and 15 minute load averages, e.g. `1.02 0.87 0.66` (`?` when /proc/loadavg cannot be read).
  static func loadAverage() -> String {
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
  }

  func header(dir: String, port: Int, levels: [Int]) -> String {
    let load = Self.loadAverage()
    return """
      openshell-loadgen
      machine: nproc=\(ProcessInfo.processInfo.activeProcessorCount), load average \(load) at start
      gateway: in-process, 127.0.0.1:\(port), mTLS (operator client certificate), no compute driver, \
      log durability .sync, data dir \(dir), tasks on \(nioExecutor ? "NIO's event loops" : "Swift's default pool")\
      \(serverEventLoop ? ", RPC tasks on the connections' event loop" : "")
      client: grpc-swift-2 HTTP2ClientTransport.Posix\(clientEventLoop ? " (calls on its own event loop)" : ""), \(connections) connection(s), \(duration) s per cell, \
      concurrency \(levels.map(String.init).joined(separator: ","))
      """
  }

  /// `commitCounters`: the gateway log's (commits, append calls) so far.
  func measure(
    port: Int, pki: String, levels: [Int], commitCounters: @escaping @Sendable () -> (UInt64, UInt64)
  ) async throws -> [[String]] {
    try await measureCells(port: port, pki: pki, levels: levels, commitCounters: commitCounters).map { $0.result.row($0.rpc, $0.level) }
  }

  /// One measured cell: an RPC at one concurrency level.
  struct Cell: Sendable {
    var rpc: String
    var level: Int
    var result: RunResult
  }

  /// GetSandbox and CreateSandbox at each level (in that order); `after` runs after each CreateSandbox cell
  /// (the etcd peer's cell at the same level, interleaved) and its cells are added to the result.
  func measureCells(
    port: Int, pki: String, levels: [Int], commitCounters: @escaping @Sendable () -> (UInt64, UInt64),
    after: (@Sendable (Int) async throws -> Cell?)? = nil
  ) async throws -> [Cell] {
    let duration = self.duration
    return try await withClients(port: port, pki: pki, count: connections) { apis in
      let scope = Openshell_Datamodel_V1_WorkspaceSelector.with { $0.workspace = "default" }
      // The sandbox GetSandbox reads, and a warm-up of both RPCs (TLS handshake, first allocations).
      _ = try await apis[0].createSandbox(
        .with {
          $0.name = "loadgen-target"; $0.workspaceScope = scope
        })
      let names = Ticket()
      let runID = String(UInt32(truncatingIfNeeded: getpid()), radix: 36)
      for api in apis {
        for _ in 0..<50 {
          _ = try await api.getSandbox(
            .with {
              $0.name = "loadgen-target"; $0.workspaceScope = scope
            })
        }
        for _ in 0..<10 {
          let n = names.next()
          _ = try await api.createSandbox(
            .with {
              $0.name = "lg-\(runID)-\(n)"; $0.workspaceScope = scope
            })
        }
      }
      let apiTicket = Ticket()
      var cells: [Cell] = []
      for level in levels {
        let get = try await runConcurrent(concurrency: level, seconds: duration) {
          let api = apis[apiTicket.next() % apis.count]
          _ = try await api.getSandbox(
            .with {
              $0.name = "loadgen-target"; $0.workspaceScope = scope
            })
        }
        cells.append(Cell(rpc: "GetSandbox", level: level, result: get))
        let before = commitCounters()
        var create = try await runConcurrent(concurrency: level, seconds: duration) {
          let api = apis[apiTicket.next() % apis.count]
          let n = names.next()
          _ = try await api.createSandbox(
            .with {
              $0.name = "lg-\(runID)-\(n)"
              $0.workspaceScope = scope
              $0.labels = ["bench": "loadgen"]
            })
        }
        let done = commitCounters()
        let commits = done.0 - before.0
        let calls = done.1 - before.1
        create.note = commits > 0 ? String(format: "%.1f", Double(calls) / Double(commits)) : "-"
        cells.append(Cell(rpc: "CreateSandbox", level: level, result: create))
        if let after, let peer = try await after(level) { cells.append(peer) }
      }
      return cells
    }
  }

  /// Runs `body` with `count` clients, each its own connection; `certificate` (cert, key files) replaces the
  /// operator's; `plaintext` connects without TLS (prior-knowledge HTTP/2, for `--floor`'s plaintext server).
  func withClients<R: Sendable>(
    port: Int, pki: String, count: Int, certificate: (cert: String, key: String)? = nil, plaintext: Bool = false,
    _ body: @escaping @Sendable ([Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>]) async throws -> R
  ) async throws -> R {
    try await withGRPCClients(port: port, pki: pki, count: count, certificate: certificate, plaintext: plaintext) { clients in
      try await body(clients.map { Openshell_V1_OpenShell.Client(wrapping: $0) })
    }
  }

  /// Runs `body` with `count` gRPC clients over mTLS to 127.0.0.1:`port`, each its own connection.
  /// `alignFrames` connects as the CLI does (`GatewayClient.withConnection`: ``HTTP2FrameAligner`` between TLS
  /// and HTTP/2), for the benchmarks that stand in for `openshell audit`; `plaintext`: no TLS.
  func withGRPCClients<R: Sendable>(
    port: Int, pki: String, count: Int, certificate: (cert: String, key: String)? = nil, alignFrames: Bool = false, plaintext: Bool = false,
    _ body: @escaping @Sendable ([GRPCClient<HTTP2ClientTransport.Posix>]) async throws -> R
  ) async throws -> R {
    // --client-event-loop: a loop of the client's own (not one the in-process gateway serves on) for the
    // connections, and the client's tasks preferring it.
    guard clientEventLoop else {
      return try await withClientTasks(
        port: port, pki: pki, count: count, certificate: certificate, alignFrames: alignFrames, plaintext: plaintext, loop: nil, body)
    }
    let executor = Self.clientExecutor
    return try await withTaskExecutorPreference(executor) {
      try await withClientTasks(
        port: port, pki: pki, count: count, certificate: certificate, alignFrames: alignFrames, plaintext: plaintext, loop: executor.eventLoop, body)
    }
  }

  /// `--client-event-loop`'s loop (one thread for the process, never shut down) as a task executor.
  static let clientExecutor = EventLoopTaskExecutor(eventLoop: MultiThreadedEventLoopGroup(numberOfThreads: 1).next())

  private func withClientTasks<R: Sendable>(
    port: Int, pki: String, count: Int, certificate: (cert: String, key: String)?, alignFrames: Bool, plaintext: Bool, loop: (any EventLoop)?,
    _ body: @escaping @Sendable ([GRPCClient<HTTP2ClientTransport.Posix>]) async throws -> R
  ) async throws -> R {
    try await withThrowingTaskGroup(of: Void.self) { group in
      var clients: [GRPCClient<HTTP2ClientTransport.Posix>] = []
      let coalesce = !clientNoFlushCoalescing
      let config = HTTP2ClientTransport.Posix.Config.defaults {
        if alignFrames { $0.channelDebuggingCallbacks.onCreateTCPConnection = { HTTP2FrameAligner.install(on: $0) } }
        // grpc-swift-nio-transport's default defers each flush up to 100 µs to batch writes: at concurrency 1 every
        // request waits for that timer in the client, a delay that is not the gateway's (issue 14).
        if !coalesce { $0.connection.flushCoalescing = nil }
      }
      let security: HTTP2ClientTransport.Posix.TransportSecurity =
        plaintext
        ? .plaintext
        : .mTLS(
          certificateChain: [.file(path: certificate?.cert ?? pki + "/client.crt", format: .pem)],
          privateKey: .file(path: certificate?.key ?? pki + "/client.key", format: .pem)
        ) { c in
          c.trustRoots = .certificates([.file(path: pki + "/ca.crt", format: .pem)])
        }
      for _ in 0..<count {
        let transport = try HTTP2ClientTransport.Posix(
          target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: security, config: config,
          eventLoopGroup: loop ?? MultiThreadedEventLoopGroup.singleton)
        let client = GRPCClient(transport: transport)
        clients.append(client)
        group.addTask { try await client.runConnections() }
      }
      do {
        let r = try await body(clients)
        for c in clients { c.beginGracefulShutdown() }
        try await group.waitForAll()
        return r
      } catch {
        for c in clients { c.beginGracefulShutdown() }
        group.cancelAll()
        throw error
      }
    }
  }
}
