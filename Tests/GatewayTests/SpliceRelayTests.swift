import Foundation
import GRPCCore
import OpenShellAPI
import SandboxProtocol
import Testing

@testable import Gateway

/// The splice(2) relay of uninspected connections (Supervisor `SpliceRelay`): bulk bytes arrive whole
/// and unchanged in both directions, through a CONNECT tunnel and a forwarded absolute-form request, and
/// a half-close (the client's end of its sending side) reaches the upstream while the answer still flows;
/// concurrent tunnels each get a relay thread, and threads are kept and reused.
extension NetworkEnforcementTests {
  @Test("splice relay: 32 MiB through CONNECT and absolute-form intact; 8 MiB echoed through a tunnel after a half-close")
  func spliceRelayMovesBulkBytesBothWays() async throws {
    let up = try Upstream.start("http", bigMiB: 32)
    defer { up.stop() }
    // An echo server on the host's loopback: sends back everything until the client's EOF, then closes.
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("echo-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let echoScript = """
      import socket, sys, os, threading
      s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)
      open(sys.argv[1] + '.tmp', 'w').write(str(s.getsockname()[1])); os.rename(sys.argv[1] + '.tmp', sys.argv[1])
      def serve(c):
          while True:
              d = c.recv(1 << 16)
              if not d: break
              c.sendall(d)
          c.close()
      while True:
          c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
      """
    let echo = try Spawner.spawn("/usr/bin/python3", ["-c", echoScript, dir + "/port"], environment: ["PATH": "/usr/bin:/bin"])
    defer {
      kill(echo.pid, SIGKILL)
      _ = Spawner.waitBlocking(echo.pid)
    }
    var found = 0
    for _ in 0..<500 where found == 0 {
      found = Int((try? String(contentsOfFile: dir + "/port", encoding: .utf8)) ?? "") ?? 0
      if found == 0 { usleep(10_000) }
    }
    try #require(found > 0)
    let echoPort = found
    let expected = String(try hostSHA256(up.directory + "/big.bin"))
    try #require(expected.count == 64 && expected != String(repeating: "0", count: 64))
    try await withSandboxGateway { gw in
      let policy = try NetworkPolicies.policy(
        """
          bulk:
            endpoints:
              - host: 127.0.0.1
                port: \(up.port)
                allowed_ips: [127.0.0.1]
              - host: 127.0.0.1
                port: \(echoPort)
                allowed_ips: [127.0.0.1]
            binaries:
              - path: /usr/bin/curl
              - path: /usr/bin/python3*
        """)
      try await gw.withClient { c in
        try await c.createWithPolicy("splice", policy)
        try await c.wait("splice", .ready)
        try await c.waitLoaded("splice")
        for flag in ["-p", "-0"] {
          let r = try await c.exec(
            "splice", ["/bin/sh", "-c", "/usr/bin/curl -sS \(flag) http://127.0.0.1:\(up.port)/big.bin | /usr/bin/sha256sum"], env: viaProxy)
          #expect(r.out.hasPrefix(expected), "curl \(flag): \(r.out) \(r.err)")
        }
        let client = """
          import hashlib, os, socket, threading
          host, port = os.environ['HTTP_PROXY'][len('http://'):].rsplit(':', 1)
          s = socket.create_connection((host, int(port)))
          s.sendall(b'CONNECT 127.0.0.1:\(echoPort) HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')
          head = b''
          while b'\\r\\n\\r\\n' not in head: head += s.recv(1)
          assert b' 200 ' in head.split(b'\\r\\n')[0], head
          data = os.urandom(8 << 20)
          def send():
              s.sendall(data); s.shutdown(socket.SHUT_WR)
          t = threading.Thread(target=send); t.start()
          got = bytearray()
          while True:
              d = s.recv(1 << 20)
              if not d: break
              got += d
          t.join()
          print('echo', len(got), hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest())
          """
        let r = try await c.exec("splice", ["/usr/bin/python3", "-c", client])
        #expect(r.out.contains("echo \(8 << 20) True"), "\(r.out) \(r.err)")

        // Relays run on kept threads (the supervisor's RelayThreads): three tunnels open at once (all three
        // established before any body is read, so three relays hold a thread each at the same time) arrive
        // whole; a later tunnel reuses an idle thread instead of starting another.
        let three = """
          import hashlib, os, socket
          host, port = os.environ['HTTP_PROXY'][len('http://'):].rsplit(':', 1)
          tunnels = []
          for _ in range(3):
              s = socket.create_connection((host, int(port)))
              s.sendall(b'CONNECT 127.0.0.1:\(up.port) HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')
              head = b''
              while b'\\r\\n\\r\\n' not in head: head += s.recv(1)
              assert b' 200 ' in head.split(b'\\r\\n')[0], head
              tunnels.append(s)
          for s in tunnels:
              s.sendall(b'GET /big.bin HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')
          for s in tunnels:
              data = bytearray()
              while True:
                  d = s.recv(1 << 20)
                  if not d: break
                  data += d
              print(hashlib.sha256(bytes(data[data.index(b'\\r\\n\\r\\n') + 4:])).hexdigest())
          """
        let concurrent = try await c.exec("splice", ["/usr/bin/python3", "-c", three])
        #expect(concurrent.out.split(separator: "\n").filter { $0.hasPrefix(expected) }.count == 3, "\(concurrent.out) \(concurrent.err)")
        let supervisor = try #require(SupervisorProcesses.pid(hostname: "splice"), "no supervisor of sandbox splice under this process")
        let pooled = Self.relayThreads(supervisor)
        #expect((3...4).contains(pooled), "relay threads kept after three tunnels at once: \(pooled)")
        let again = try await c.exec(
          "splice", ["/bin/sh", "-c", "/usr/bin/curl -sS -p http://127.0.0.1:\(up.port)/big.bin | /usr/bin/sha256sum"], env: viaProxy)
        #expect(again.out.hasPrefix(expected), "\(again.out) \(again.err)")
        #expect(Self.relayThreads(supervisor) == pooled, "a new relay thread for a tunnel while \(pooled) were idle")
      }
    }
  }

  /// How many threads of process `pid` are the proxy's relay threads (named `openshell-relay`).
  static func relayThreads(_ pid: Int32) -> Int {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    return tasks.filter {
      String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/task/\($0)/comm") ?? Data(), as: UTF8.self)
        .trimmingCharacters(in: .whitespacesAndNewlines) == "openshell-relay"
    }.count
  }

  func hostSHA256(_ path: String) throws -> Substring {
    let p = try Spawner.spawn("/usr/bin/sha256sum", [path], environment: ["PATH": "/usr/bin:/bin"], stdout: .pipe)
    var out = Data()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
      let n = read(p.stdout!, &buf, buf.count)
      if n <= 0 { break }
      out.append(contentsOf: buf[0..<n])
    }
    close(p.stdout!)
    _ = Spawner.waitBlocking(p.pid)
    return String(decoding: out, as: UTF8.self).prefix(64)
  }
}
