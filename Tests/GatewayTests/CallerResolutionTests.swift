import Foundation
import GRPCCore
import OpenShellAPI
import Testing

@testable import Gateway

/// The proxy's caller resolution through NETLINK_SOCK_DIAG (``CallerResolver``, ``SocketDiag`` in the
/// supervisor): in use, and as strict per connection as before, also with concurrent connections
/// (the lookups share one netlink socket).
extension NetworkEnforcementTests {
  @Test("callers are identified through sock_diag; per connection, also concurrently: curl allowed, python3 denied")
  func callerResolutionBySockDiag() async throws {
    let up = try Upstream.start("http")
    defer { up.stop() }
    try await withSandboxGateway { gw in
      let p = up.port
      let policy = try NetworkPolicies.policy(
        """
          local:
            endpoints:
              - host: 127.0.0.1
                port: \(p)
                allowed_ips: [127.0.0.1]
            binaries:
              - path: /usr/bin/curl
        """)
      try await gw.withClient { c in
        try await c.createWithPolicy("sd1", policy)
        try await c.wait("sd1", .ready)
        try await c.waitLoaded("sd1")
        /// The sandbox's log lines once one satisfies `match` (logs are pushed; up to 10 s).
        func logged(_ match: (String) -> Bool) async throws -> [String] {
          let deadline = ContinuousClock.now + .seconds(10)
          var lines: [String] = []
          repeat {
            lines = try await c.logLines("sd1").map(\.message)
            if lines.contains(where: match) { break }
            try await Task.sleep(for: .milliseconds(100))
          } while ContinuousClock.now < deadline
          return lines
        }
        let lines = try await logged { $0.contains("network policy proxy listening") }
        #expect(lines.contains { $0.contains("network policy proxy listening") && $0.contains("callers identified through sock_diag") }, "\(lines)")

        // Eight curl and eight python3 requests at once, each on its own connection: every curl gets the
        // file, every python3 request is refused naming its binary.
        let url = "http://127.0.0.1:\(p)/hello.txt"
        let script = """
          import subprocess, sys, threading, urllib.request
          url = sys.argv[1]
          curls = [subprocess.Popen(["curl", "-sS", "-o", "/tmp/out%d" % i, "-w", "curl=%{http_code}", url], stdout=subprocess.PIPE) for i in range(8)]
          results = []
          def fetch():
              try: urllib.request.urlopen(url); results.append("python=200")
              except Exception as e: results.append("python=" + str(getattr(e, "code", e)))
          threads = [threading.Thread(target=fetch) for _ in range(8)]
          for t in threads: t.start()
          results += [c.communicate()[0].decode() for c in curls]
          for t in threads: t.join()
          print("\\n".join(results))
          """
        let r = try await c.exec("sd1", ["python3", "-c", script, url], env: viaProxy)
        let out = r.out.split(separator: "\n").map(String.init).sorted()
        #expect(out == Array(repeating: "curl=200", count: 8) + Array(repeating: "python=403", count: 8), "\(r.out) \(r.err)")
        let denial = { (line: String) in line.contains("network denied") && line.contains("127.0.0.1:\(p)") && line.contains("python3") }
        #expect(try await logged(denial).contains(where: denial), "no denial naming python3")
      }
    }
  }
}
