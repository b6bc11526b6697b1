import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOPosix
import OpenShellAPI
import PolicyKit
import SandboxProtocol

/// The policy proxy's cost (issue 10, "Benchmark"): one sandbox whose policy lets python3 reach a
/// loopback upstream (an in-process NIO HTTP server on the host's 127.0.0.1, one event-loop thread);
/// the same python3 client runs inside the sandbox (its own network namespace: veth → the proxy in the
/// supervisor on the host side → loopback; a new connection and CONNECT per request, so every request
/// pays the full decision — caller identification, policy, DNS/SSRF check, upstream dial) and on the
/// host (directly to 127.0.0.1). Reports p50/p99 of a small request and the throughput of a 100 MB
/// download, side by side. The same through an L7-inspected endpoint (`protocol: rest`, the name
/// `localhost`): every request is parsed, decided by the L7 rules and re-encoded by the proxy
/// (plaintext HTTP inside the tunnel; TLS termination itself is not part of this figure).
///
/// Throughput: `rounds` rounds of direct, tunnel and L7 back to back, each `downloads` downloads of
/// 100 MB (so ≥ 1 GB per sample: one 100 MB download lasts ~40 ms, too short to time alone on a shared
/// machine); a mode's rate is the median of its 100 MB downloads. Beside each, the CPU time per 100 MB
/// of the three parties — upstream server (its event-loop thread), proxy (the supervisor process,
/// including relay threads that already ended) and client (python's own process time) — whose sum
/// bounds the rate a machine with N cores can reach: N × 100 MB / sum. Peers in the same rounds, on the
/// sandbox's own path with the same client: the upstream reached over the veth without any relay, and
/// HAProxy (kernel splice) and nginx `stream` (userspace copy) as TCP relays (``PeerRelays``), with the relay
/// process's CPU in the proxy column; the report is ``ProxyBenchReport``.
enum ProxyBench {
  static let bigBytes = 100 << 20

  /// argv: host port small-requests proxy("-" for none) downloads. Prints JSON: small-request
  /// latencies (ms), per-download rate (MB/s) and process CPU (ms).
  static let client = #"""
    import json, socket, sys, time
    host, port, n, proxy, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    if proxy == "-": proxy = ""
    buf = bytearray(1 << 20)
    def request(path):
        if proxy:
            ph, pp = proxy.rsplit(":", 1)
            s = socket.create_connection((ph, int(pp)))
        else:
            s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy:
            s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk: raise SystemExit("proxy closed: " + head.decode())
                head += chunk
            if b" 200 " not in head.split(b"\r\n")[0]: raise SystemExit("proxy refused: " + head.decode())
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        total = 0
        while True:
            k = s.recv_into(buf)
            if k == 0: break
            total += k
        s.close()
        return total
    lat = []
    for i in range(n + 20 if n else 0):
        t = time.perf_counter(); request("/small"); d = time.perf_counter() - t
        if i >= 20: lat.append(d * 1000)
    rates, cpu, got = [], [], 0
    for _ in range(big):
        c = time.process_time(); t = time.perf_counter(); got = request("/big"); d = time.perf_counter() - t
        rates.append(got / d / 1e6); cpu.append((time.process_time() - c) * 1000)
    print(json.dumps({"lat": lat, "rates": rates, "cpu": cpu, "bytes": got}))  # bytes include the response head
    """#

  /// One mode's downloads in one round: rates (MB/s) and CPU per 100 MB (ms) of server, proxy, client.
  struct Batch {
    var rates: [Double]
    var server, proxy, client: Double
    var cpu: Double { server + proxy + client }
  }

  /// Runs the benchmark with `c` on a gateway whose sandboxes the local driver runs.
  static func run(_ c: Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>, requests: Int, rounds: Int, downloads: Int) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let upstream = try await UpstreamServer.start(group: group, bigBytes: bigBytes)
    let port = upstream.localAddress!.port!
    let ws = Openshell_Datamodel_V1_WorkspaceSelector.with { $0.workspace = "default" }
    let policy = try PolicyYAML.parse(
      """
      version: 1
      filesystem_policy: {include_workdir: true, read_only: [/usr, /lib, /etc, /proc], read_write: [/sandbox, /tmp]}
      process: {run_as_user: sandbox, run_as_group: sandbox}
      network_policies:
        bench:
          endpoints:
            - {host: 127.0.0.1, port: \(port), allowed_ips: [127.0.0.1]}
            - {host: localhost, port: \(port), allowed_ips: [127.0.0.1], protocol: rest, access: read-only}
          binaries: [{path: "/usr/bin/python3*"}]
      """
    ).policy
    _ = try await c.createSandbox(
      .with {
        $0.name = "proxy-bench"; $0.spec = .with { $0.policy = policy }; $0.workspaceScope = ws
      })
    while try await c.getSandbox(
      .with {
        $0.name = "proxy-bench"; $0.workspaceScope = ws
      }
    ).sandbox.status.phase != .ready {
      try await Task.sleep(for: .milliseconds(20))
    }
    while try await c.getSandboxPolicyStatus(
      .with {
        $0.sandbox = "proxy-bench"; $0.workspaceScope = ws
      }
    ).revision.status != .loaded {
      try await Task.sleep(for: .milliseconds(20))
    }
    let proxyAddress = try await execOut(c, ["/bin/sh", "-c", "printf %s \"$HTTP_PROXY\""]).replacingOccurrences(of: "http://", with: "")
    let viaProxy = try decode(try await execOut(c, ["/usr/bin/python3", "-c", client, "127.0.0.1", String(port), String(requests), proxyAddress, "0"]))
    let inspected = try decode(try await execOut(c, ["/usr/bin/python3", "-c", client, "localhost", String(port), String(requests), proxyAddress, "0"]))
    let direct = try decode(try hostOut(["/usr/bin/python3", "-c", client, "127.0.0.1", String(port), String(requests), "-", "0"]))

    // The sandbox's own path without a relay (a second listener of the upstream on the veth's host
    // address), and the peer relays (HAProxy, nginx stream) on that path; stopped on every exit path.
    let hostAddress = String(proxyAddress.split(separator: ":").first ?? "")
    let id = try await c.getSandbox(
      .with {
        $0.name = "proxy-bench"; $0.workspaceScope = ws
      }
    ).sandbox.metadata.id
    let namespaces = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
    guard let namespace = namespaces.first(where: { $0.hasPrefix("openshell-\(id)") }) else {
      throw LauncherBench.BenchError("the network namespace of sandbox \(id) is not in /run/netns: \(namespaces)")
    }
    let onVeth = try await UpstreamServer.start(group: group, bigBytes: bigBytes, host: hostAddress)
    let vethPort = onVeth.localAddress!.port!
    let peers = try PeerRelays(upstreamPort: port, namespace: namespace, hostAddress: hostAddress, extraPorts: [vethPort])
    defer { peers.stop() }
    var peerLatencies: [[Double]] = [
      try decode(try await execOut(c, ["/usr/bin/python3", "-c", client, hostAddress, String(vethPort), String(requests), "-", "0"])).lat
    ]
    for r in peers.relays {
      peerLatencies.append(try decode(try await execOut(c, ["/usr/bin/python3", "-c", client, hostAddress, String(r.port), String(requests), "-", "0"])).lat)
    }

    // Throughput, interleaved: on a shared machine the rates swing with the load; the CPU cost of each
    // party does much less.
    let supervisor = SupervisorProcesses.pid(hostname: "proxy-bench") ?? 0
    let loop = upstream.eventLoop
    func batch(_ args: [String], inSandbox: Bool, relayCPU: () -> Int64) async throws -> Batch {
      let (server0, proxy0) = (try await UpstreamServer.cpuNanoseconds(loop), relayCPU())
      let r = try decode(try inSandbox ? await execOut(c, args) : hostOut(args), downloads: downloads)
      let (server1, proxy1) = (try await UpstreamServer.cpuNanoseconds(loop), relayCPU())
      let n = Double(r.rates.count)
      return Batch(rates: r.rates, server: Double(server1 - server0) / 1e6 / n, proxy: Double(proxy1 - proxy0) / 1e6 / n, client: r.cpu.reduce(0, +) / n)
    }
    func args(_ host: String, _ port: Int, _ proxy: String) -> [String] {
      ["/usr/bin/python3", "-c", client, host, String(port), "0", proxy, String(downloads)]
    }
    var table: [ProxyBenchReport.Round] = []
    for _ in 0..<rounds {
      let d = try await batch(args("127.0.0.1", port, "-"), inSandbox: false) { Self.processCPUNanoseconds(supervisor) }
      let t = try await batch(args("127.0.0.1", port, proxyAddress), inSandbox: true) { Self.processCPUNanoseconds(supervisor) }
      let l = try await batch(args("localhost", port, proxyAddress), inSandbox: true) { Self.processCPUNanoseconds(supervisor) }
      var p: [Batch] = [try await batch(args(hostAddress, vethPort, "-"), inSandbox: true) { 0 }]
      for r in peers.relays {
        p.append(try await batch(args(hostAddress, r.port, "-"), inSandbox: true) { PeerRelays.cpuNanoseconds(r.pid) })
      }
      table.append(.init(direct: d, tunnel: t, l7: l, peers: p))
    }
    peers.stop()
    _ = try await c.deleteSandbox(
      .with {
        $0.name = "proxy-bench"; $0.workspaceScope = ws
      })
    while try await !c.listSandboxes(.with { $0.workspaceScope = ws }).sandboxes.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
    try await upstream.close()
    try await onVeth.close()
    try await group.shutdownGracefully()

    ProxyBenchReport(
      requests: requests, rounds: rounds, downloads: downloads, direct: direct.lat, viaProxy: viaProxy.lat, inspected: inspected.lat,
      peers: [(Self.noRelay, "the upstream's second listener on the veth's host address, reached directly: the sandbox's path without any relay")]
        + peers.relays.map { ($0.name, $0.setting) }, peerLatencies: peerLatencies, skipped: peers.skipped, table: table
    ).print()
  }

  /// The name of the row of the sandbox's path without a relay.
  static let noRelay = "veth, no relay"

  /// CPU time (user + system) of process `pid` so far, in nanoseconds: `/proc/<pid>/stat` fields 14
  /// and 15, which also count threads that already ended (a tunnel's relay thread ends with its
  /// connection, so summing the live threads' counters missed it). Clock-tick resolution (10 ms): read
  /// around a batch of downloads, not one.
  static func processCPUNanoseconds(_ pid: Int32) -> Int64 {
    let stat = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/stat") ?? Data(), as: UTF8.self)
    guard let close = stat.lastIndex(of: ")") else { return 0 }
    // Fields after the command: state is field 3, utime 14, stime 15.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Int64(fields[11]), let system = Int64(fields[12]) else { return 0 }
    return (user + system) * 1_000_000_000 / Int64(sysconf(Int32(_SC_CLK_TCK)))
  }

  struct Result: Decodable { var lat: [Double]; var rates: [Double]; var cpu: [Double]; var bytes: Int }

  static func decode(_ text: String, downloads: Int = 0) throws -> Result {
    guard let r = try? JSONDecoder().decode(Result.self, from: Data(text.utf8)), r.rates.count == downloads, downloads == 0 || r.bytes >= bigBytes,
      downloads > 0 || !r.lat.isEmpty
    else {
      throw RPCError(code: .internalError, message: "benchmark client failed: \(text)")
    }
    return r
  }

  static func percentile(_ values: [Double], _ q: Double) -> Double {
    let s = values.sorted()
    return s[min(s.count - 1, max(0, Int((Double(s.count) * q).rounded(.up)) - 1))]
  }

  static func execOut(_ c: Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>, _ command: [String]) async throws -> String {
    try await c.execSandbox(
      .with {
        $0.sandbox = "proxy-bench"; $0.command = command; $0.workspaceScope = .with { $0.workspace = "default" }
      }
    ) { r in
      var out = Data()
      var err = Data()
      for try await e in r.messages {
        switch e.payload {
        case .stdout(let o): out.append(o.data)
        case .stderr(let x): err.append(x.data)
        default: break
        }
      }
      return String(decoding: out.isEmpty ? err : out, as: UTF8.self)
    }
  }

  static func hostOut(_ command: [String]) throws -> String {
    let p = try Spawner.spawn(command[0], Array(command.dropFirst()), environment: ["PATH": "/usr/bin:/bin"], stdout: .pipe)
    var out = Data()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
      let n = read(p.stdout!, &buf, buf.count)
      if n <= 0 { break }
      out.append(contentsOf: buf[0..<n])
    }
    close(p.stdout!)
    _ = Spawner.waitBlocking(p.pid)
    return String(decoding: out, as: UTF8.self)
  }
}
