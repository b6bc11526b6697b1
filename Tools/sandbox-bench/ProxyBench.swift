import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOPosix
import OpenShellAPI
import PolicyKit
import SandboxProtocol

/// The policy proxy's cost (issue 10, "Benchmark"): one sandbox whose policy lets python3 reach a
/// loopback upstream (an in-process NIO HTTP server on the host's 127.0.0.1); the same python3 client
/// runs inside the sandbox (through the proxy: a new connection and CONNECT per request, so every
/// request pays the full decision — caller identification, policy, DNS/SSRF check, upstream dial) and on
/// the host (directly). Reports p50/p99 of a small request and the throughput of a 100 MB download,
/// side by side, in the same run. The same through an L7-inspected endpoint (`protocol: rest`, the
/// name `localhost`): every request is parsed, decided by the L7 rules and re-encoded by the proxy
/// (plaintext HTTP inside the tunnel; TLS termination itself is not part of this figure).
enum ProxyBench {
  static let bigBytes = 100 << 20

  static let client = #"""
    import json, socket, sys, time
    host, port, n, proxy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), (sys.argv[4] if len(sys.argv) > 4 else "")
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
    for i in range(n + 20):
        t = time.perf_counter(); request("/small"); d = time.perf_counter() - t
        if i >= 20: lat.append(d * 1000)
    rates = []
    for _ in range(3):
        t = time.perf_counter(); got = request("/big"); d = time.perf_counter() - t
        rates.append(got / d / 1e6)
    print(json.dumps({"lat": lat, "mbps": max(rates), "bytes": got}))  # bytes include the response head
    """#

  /// Runs the benchmark with `c` on a gateway whose sandboxes the local driver runs.
  static func run(_ c: Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>, requests: Int) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let upstream = try await UpstreamServer.start(group: group, bigBytes: bigBytes)
    let port = upstream.localAddress!.port!
    let ws = Openshell_Datamodel_V1_WorkspaceSelector.with { $0.workspace = "default" }
    let policy = try PolicyYAML.parse("""
      version: 1
      filesystem_policy: {include_workdir: true, read_only: [/usr, /lib, /etc, /proc], read_write: [/sandbox, /tmp]}
      process: {run_as_user: sandbox, run_as_group: sandbox}
      network_policies:
        bench:
          endpoints:
            - {host: 127.0.0.1, port: \(port), allowed_ips: [127.0.0.1]}
            - {host: localhost, port: \(port), allowed_ips: [127.0.0.1], protocol: rest, access: read-only}
          binaries: [{path: "/usr/bin/python3*"}]
      """).policy
    _ = try await c.createSandbox(.with { $0.name = "proxy-bench"; $0.spec = .with { $0.policy = policy }; $0.workspaceScope = ws })
    while try await c.getSandbox(.with { $0.name = "proxy-bench"; $0.workspaceScope = ws }).sandbox.status.phase != .ready {
      try await Task.sleep(for: .milliseconds(20))
    }
    while try await c.getSandboxPolicyStatus(.with { $0.sandbox = "proxy-bench"; $0.workspaceScope = ws }).revision.status != .loaded {
      try await Task.sleep(for: .milliseconds(20))
    }
    let proxyAddress = try await execOut(c, ["/bin/sh", "-c", "printf %s \"$HTTP_PROXY\""]).replacingOccurrences(of: "http://", with: "")
    let viaProxy = try decode(try await execOut(c, ["/usr/bin/python3", "-c", client, "127.0.0.1", String(port), String(requests), proxyAddress]))
    let inspected = try decode(try await execOut(c, ["/usr/bin/python3", "-c", client, "localhost", String(port), String(requests), proxyAddress]))
    let direct = try decode(try hostOut(["/usr/bin/python3", "-c", client, "127.0.0.1", String(port), String(requests)]))
    // Throughput again, interleaved (direct, tunnel, L7; three rounds, each the best of 3 downloads), with
    // the proxy's CPU time per 100 MB: on a shared machine the rates swing with the load, the CPU cost
    // of relaying does much less.
    let supervisor = Self.supervisorPID(hostname: "proxy-bench")
    var rounds: [(direct: Double, tunnel: Double, l7: Double, tunnelCPU: Double, l7CPU: Double)] = []
    for _ in 0..<3 {
      let d = try decode(try hostOut(["/usr/bin/python3", "-c", client, "127.0.0.1", String(port), "1"]))
      var cpu = Self.cpuNanoseconds(supervisor)
      let t = try decode(try await execOut(c, ["/usr/bin/python3", "-c", client, "127.0.0.1", String(port), "1", proxyAddress]))
      let tunnelCPU = Double(Self.cpuNanoseconds(supervisor) - cpu) / 1e6 / 3
      cpu = Self.cpuNanoseconds(supervisor)
      let l = try decode(try await execOut(c, ["/usr/bin/python3", "-c", client, "localhost", String(port), "1", proxyAddress]))
      let l7CPU = Double(Self.cpuNanoseconds(supervisor) - cpu) / 1e6 / 3
      rounds.append((d.mbps, t.mbps, l.mbps, tunnelCPU, l7CPU))
    }
    _ = try await c.deleteSandbox(.with { $0.name = "proxy-bench"; $0.workspaceScope = ws })
    while try await !c.listSandboxes(.with { $0.workspaceScope = ws }).sandboxes.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
    try await upstream.close()
    try await group.shutdownGracefully()

    print("policy proxy: \(requests) small requests (new connection each; via proxy = CONNECT + decision per request), 100 MB download (best of 3)")
    print(SandboxBench.summary("small request, direct   ", direct.lat))
    print(SandboxBench.summary("small request, via proxy", viaProxy.lat))
    let p50 = percentile(viaProxy.lat, 0.5) - percentile(direct.lat, 0.5)
    let p99 = percentile(viaProxy.lat, 0.99) - percentile(direct.lat, 0.99)
    print(String(format: "added latency: p50 %.2f ms, p99 %.2f ms", p50, p99))
    print(String(format: "100 MB download: direct %.0f MB/s, via proxy %.0f MB/s (%.0f%% of direct)", direct.mbps, viaProxy.mbps, 100 * viaProxy.mbps / direct.mbps))
    print(SandboxBench.summary("small request, L7       ", inspected.lat))
    print(String(format: "L7 added latency: p50 %.2f ms, p99 %.2f ms", percentile(inspected.lat, 0.5) - percentile(direct.lat, 0.5), percentile(inspected.lat, 0.99) - percentile(direct.lat, 0.99)))
    print(String(format: "100 MB download, L7: %.0f MB/s (%.0f%% of direct)", inspected.mbps, 100 * inspected.mbps / direct.mbps))
    print("interleaved rounds (direct, tunnel, L7 back to back; best of 3 downloads each; proxy CPU per 100 MB incl. 20 small requests):")
    for (i, r) in rounds.enumerated() {
      print(String(format: "  round %d: direct %.0f MB/s, tunnel %.0f MB/s (%.0f%%, proxy CPU %.0f ms), L7 %.0f MB/s (%.0f%%, proxy CPU %.0f ms)",
        i + 1, r.direct, r.tunnel, 100 * r.tunnel / r.direct, r.tunnelCPU, r.l7, 100 * r.l7 / r.direct, r.l7CPU))
    }
    let median = { (f: ((direct: Double, tunnel: Double, l7: Double, tunnelCPU: Double, l7CPU: Double)) -> Double) in rounds.map(f).sorted()[rounds.count / 2] }
    print(String(format: "median of rounds: tunnel %.0f%% of direct (proxy CPU %.0f ms / 100 MB), L7 %.0f%% of direct (proxy CPU %.0f ms / 100 MB)",
      median { 100 * $0.tunnel / $0.direct }, median { $0.tunnelCPU }, median { 100 * $0.l7 / $0.direct }, median { $0.l7CPU }))
  }

  /// The pid of the supervisor of the sandbox whose bwrap runs with `--hostname NAME` (0 if none).
  static func supervisorPID(hostname: String) -> Int32 {
    let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
    func cmdline(_ pid: Int32) -> [String] {
      (FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()).split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }
    func parent(_ pid: Int32) -> Int32 {
      let stat = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/stat") ?? Data(), as: UTF8.self)
      guard let close = stat.lastIndex(of: ")") else { return 0 }
      return Int32(stat[stat.index(after: close)...].split(separator: " ").dropFirst().first ?? "") ?? 0
    }
    for pid in pids where cmdline(pid).first == SandboxProtocol.supervisorPath {
      var p = parent(pid)
      while p > 1 {
        let args = cmdline(p)
        if let i = args.firstIndex(of: "--hostname"), i + 1 < args.count, args[i + 1] == hostname { return pid }
        p = parent(p)
      }
    }
    return 0
  }

  /// CPU time of every thread of `pid` so far (`/proc/<pid>/task/*/schedstat`, nanoseconds).
  static func cpuNanoseconds(_ pid: Int32) -> Int64 {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    return tasks.reduce(0) { sum, tid in
      let text = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/task/\(tid)/schedstat") ?? Data(), as: UTF8.self)
      return sum + (Int64(text.split(separator: " ").first ?? "") ?? 0)
    }
  }

  struct Result: Decodable { var lat: [Double]; var mbps: Double; var bytes: Int }

  static func decode(_ text: String) throws -> Result {
    guard let r = try? JSONDecoder().decode(Result.self, from: Data(text.utf8)), r.bytes >= bigBytes, !r.lat.isEmpty else {
      throw RPCError(code: .internalError, message: "benchmark client failed: \(text)")
    }
    return r
  }

  static func percentile(_ values: [Double], _ q: Double) -> Double {
    let s = values.sorted()
    return s[min(s.count - 1, max(0, Int((Double(s.count) * q).rounded(.up)) - 1))]
  }

  static func execOut(_ c: Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>, _ command: [String]) async throws -> String {
    try await c.execSandbox(.with {
      $0.sandbox = "proxy-bench"; $0.command = command; $0.workspaceScope = .with { $0.workspace = "default" }
    }) { r in
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

/// A minimal HTTP/1.1 server: `GET /small` → 2 bytes, `GET /big` → `bigBytes` bytes; one request per
/// connection (`Connection: close`), TCP_NODELAY.
final class UpstreamServer: ChannelInboundHandler, Sendable {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer
  let chunk: ByteBuffer
  let bigBytes: Int

  init(bigBytes: Int) {
    self.bigBytes = bigBytes
    chunk = ByteBuffer(repeating: 0x61, count: 1 << 20)
  }

  static func start(group: EventLoopGroup, bigBytes: Int) async throws -> Channel {
    let handler = UpstreamServer(bigBytes: bigBytes)
    return try await ServerBootstrap(group: group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(handler) } }
      .bind(host: "127.0.0.1", port: 0).get()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let request = String(buffer: unwrapInboundIn(data))
    guard request.contains("\r\n\r\n") else { return }  // the client sends the head in one write
    let big = request.hasPrefix("GET /big ")
    let length = big ? bigBytes : 2
    context.write(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: \(length)\r\nConnection: close\r\n\r\n")), promise: nil)
    if big {
      for _ in 0..<(bigBytes / chunk.readableBytes) { context.write(wrapOutboundOut(chunk), promise: nil) }
    } else {
      context.write(wrapOutboundOut(ByteBuffer(string: "ok")), promise: nil)
    }
    context.writeAndFlush(wrapOutboundOut(ByteBuffer()), promise: nil)
    context.close(mode: .output, promise: nil)
  }
}
