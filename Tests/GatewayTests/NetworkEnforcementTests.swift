import Foundation
import GRPCCore
import LogTools
import OpenShellAPI
import Testing

@testable import Gateway

/// Network enforcement seen from inside real sandboxes (issue 10): each sandbox's only way out is its
/// policy proxy; requests are decided by host, port and calling binary; SSRF guard; live policy.
/// Upstreams are python3 servers on the host's 127.0.0.1, reachable only through `allowed_ips`.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct NetworkEnforcementTests {
  static let curl = "/usr/bin/curl"

  @Test("allowed host reachable; unlisted host, wrong binary, internal and metadata addresses denied")
  func decisions() async throws {
    let up = try Upstream.start("http")
    defer { up.stop() }
    try await withSandboxGateway { gw in
      let p = up.port
      var policy = try NetworkPolicies.policy(
        """
          local:
            endpoints:
              - host: localhost
                port: \(p)
                allowed_ips: [127.0.0.1]
              - host: 127.0.0.1
                port: \(p)
            binaries:
              - path: /usr/bin/curl
          meta:
            endpoints:
              - host: 169.254.169.254
                port: 80
                allowed_ips: [169.254.0.0/16]
            binaries:
              - path: /usr/bin/**
        """)
      // A hostless endpoint (any IP literal inside allowed_ips), as the proto allows.
      policy.networkPolicies["meta"]!.endpoints.append(
        .with {
          $0.ports = [80]
          $0.allowedIps = ["::ffff:169.254.0.0/112"]
        })
      let policyValue = policy
      try await gw.withClient { c in
        try await c.createWithPolicy("net1", policyValue)
        try await c.wait("net1", .ready)
        try await c.waitLoaded("net1")

        // Allowed: absolute-form and CONNECT tunnel, by curl.
        let get = try await c.exec("net1", [Self.curl, "-sS", "http://localhost:\(p)/hello.txt"], env: viaProxy)
        #expect(get.exitCode == 0, "\(get.err)")
        #expect(get.out == "hello-from-upstream\n")
        let tunnel = try await c.exec("net1", [Self.curl, "-sS", "-p", "http://localhost:\(p)/hello.txt"], env: viaProxy)
        #expect(tunnel.exitCode == 0, "\(tunnel.err)")
        #expect(tunnel.out == "hello-from-upstream\n")

        // Unlisted port: 403 naming the missing rule; a CONNECT is refused.
        let other = p == 65535 ? p - 1 : p + 1
        let unlisted = try await c.exec("net1", [Self.curl, "-sS", "-w", "%{http_code}", "http://localhost:\(other)/"], env: viaProxy)
        #expect(unlisted.out.hasSuffix("403"))
        #expect(unlisted.out.contains("no network policy has an endpoint for localhost:\(other)"))
        let refused = try await c.exec("net1", [Self.curl, "-sS", "-p", "http://localhost:\(other)/"], env: viaProxy)
        #expect(refused.exitCode == 56)
        #expect(refused.err.contains("403"))

        // Same host and port, another binary: python3 is denied.
        let py = try await c.exec(
          "net1",
          [
            "/usr/bin/python3", "-c",
            """
            import urllib.request, urllib.error
            try:
                urllib.request.urlopen('http://localhost:\(p)/hello.txt', timeout=5); print('ALLOWED')
            except urllib.error.HTTPError as e:
                print(e.code, e.read().decode())
            """,
          ], env: viaProxy)
        #expect(py.out.hasPrefix("403"), "\(py.out) \(py.err)")
        #expect(py.out.contains("binary /usr/bin/python3"))
        #expect(py.out.contains("is not listed in the binaries of network policy local"))

        // Internal address without allowed_ips.
        let internalIP = try await c.exec("net1", [Self.curl, "-sS", "-w", "%{http_code}", "http://127.0.0.1:\(p)/hello.txt"], env: viaProxy)
        #expect(internalIP.out.hasSuffix("403"))
        #expect(internalIP.out.contains("127.0.0.1 is an internal address not listed in the endpoint's allowed_ips"))

        // Cloud metadata: always denied, also IPv4-mapped, although the policy allows it.
        for url in ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/"] {
          let m = try await c.exec("net1", [Self.curl, "-sS", "-w", "%{http_code}", url])
          #expect(m.out.hasSuffix("403"), "\(url): \(m.out) \(m.err)")
          #expect(m.out.contains("cloud metadata address (always blocked)"), "\(url): \(m.out)")
        }

        // The proxy variables, as OpenShell sets them.
        let env = try await c.exec("net1", ["/usr/bin/env"])
        let proxy = env.out.split(separator: "\n").first { $0.hasPrefix("HTTP_PROXY=") }.map { String($0.dropFirst(11)) } ?? ""
        #expect(proxy.hasPrefix("http://10.200.") && proxy.hasSuffix(":3128"))
        for v in [
          "HTTPS_PROXY=\(proxy)", "ALL_PROXY=\(proxy)", "http_proxy=\(proxy)", "https_proxy=\(proxy)", "grpc_proxy=\(proxy)",
          "NO_PROXY=127.0.0.1,localhost,::1", "no_proxy=127.0.0.1,localhost,::1", "NODE_USE_ENV_PROXY=1",
        ] {
          #expect(env.out.contains(v + "\n"), "\(v)")
        }
      }
    }
  }

  /// Only loopback and the sandbox's own veth are dialled (no address outside this machine is ever a
  /// target of a test); the nftables rule rejects every destination but the proxy alike.
  @Test("direct TCP (gateway port, host loopback, host side of the veth) and UDP fail at once")
  func directTrafficFails() async throws {
    let up = try Upstream.start("http")
    defer { up.stop() }
    try await withSandboxGateway { gw in
      try await gw.withClient { c in
        try await c.createWithPolicy("net2", try NetworkPolicies.policy(""))
        try await c.wait("net2", .ready)
        let env = try await c.exec("net2", ["/bin/sh", "-c", "echo $HTTP_PROXY"])
        let hostSide =
          env.out.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "http://", with: "").split(separator: ":").first.map(
            String.init) ?? ""
        #expect(hostSide.hasPrefix("10.200."))
        for target in ["127.0.0.1:\(gw.port)", "127.0.0.1:\(up.port)", "\(hostSide):\(gw.port)", "\(hostSide):\(up.port)"] {
          let started = ContinuousClock.now
          let r = try await c.exec("net2", [Self.curl, "--noproxy", "*", "-sS", "--max-time", "5", "http://\(target)/"])
          let took = ContinuousClock.now - started
          #expect(r.exitCode == 7, "\(target): exit \(String(describing: r.exitCode)) \(r.err)")
          #expect(took < .seconds(1), "\(target) took \(took)")
        }
        let udp = try await c.exec(
          "net2",
          [
            "/usr/bin/python3", "-c",
            """
            import socket
            for host in ['\(hostSide)']:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
                try:
                    s.sendto(b'x', (host, 53)); s.recvfrom(10); print(host, 'ANSWERED')
                except OSError as e:
                    print(host, 'errno', e.errno)
            """,
          ])
        #expect(udp.out.contains("\(hostSide) errno 1"), "\(udp.out) \(udp.err)")
        #expect(!udp.out.contains("ANSWERED"))
      }
    }
  }

  @Test("glob rules: *. matches one label, **. any depth, binaries by glob")
  func globs() async throws {
    let up = try Upstream.start("http")
    defer { up.stop() }
    // Every name the proxy resolves here is in /etc/hosts: no DNS query leaves the machine.
    let hosts = try TestHosts(["a.one.test", "a.b.deep.test", "api.l7.test"])
    defer { hosts.remove() }
    try await withSandboxGateway { gw in
      let policy = try NetworkPolicies.policy(
        """
          one:
            endpoints:
              - host: "*.one.test"
                port: \(up.port)
                allowed_ips: [127.0.0.1]
            binaries:
              - path: /usr/bin/cu*
          deep:
            endpoints:
              - host: "**.deep.test"
                port: \(up.port)
                allowed_ips: [127.0.0.1]
            binaries:
              - path: /usr/**/curl
          l7:
            endpoints:
              - host: api.l7.test
                port: \(up.port)
                protocol: rest
                access: read-only
                allowed_ips: [127.0.0.1]
            binaries:
              - path: /usr/bin/curl
        """)
      try await gw.withClient { c in
        try await c.createWithPolicy("net3", policy)
        try await c.wait("net3", .ready)
        try await c.waitLoaded("net3")
        // Hosts the policy does not match are denied before any name resolution.
        func fetch(_ url: String) async throws -> String {
          try await c.exec("net3", [Self.curl, "-sS", url]).out
        }
        let p = up.port
        #expect(try await fetch("http://a.one.test:\(p)/hello.txt") == "hello-from-upstream\n")
        #expect(try await fetch("http://A.One.Test:\(p)/hello.txt") == "hello-from-upstream\n")
        #expect(try await fetch("http://a.b.deep.test:\(p)/hello.txt") == "hello-from-upstream\n")
        #expect(try await fetch("http://a.b.one.test:\(p)/").contains("no network policy has an endpoint for a.b.one.test:\(p)"))
        #expect(try await fetch("http://one.test:\(p)/").contains("no network policy has an endpoint for one.test:\(p)"))
        #expect(try await fetch("http://deep.test:\(p)/").contains("no network policy has an endpoint for deep.test:\(p)"))
        #expect(try await fetch("http://a.one.test:\(p + 1)/").contains("no network policy has an endpoint for a.one.test:\(p + 1)"))
        // A host with control characters is refused as malformed: nothing the agent sends forges log lines.
        let raw = try await c.exec(
          "net3",
          [
            "/usr/bin/python3", "-c",
            """
            import os, socket
            host, port = os.environ['HTTP_PROXY'][7:].rsplit(':', 1)
            s = socket.create_connection((host, int(port)))
            s.sendall(b'CONNECT a\\x1b[31mb\\nforged:443 HTTP/1.1\\r\\n\\r\\n')
            print(s.recv(200).split(b'\\r\\n')[0].decode())
            """,
          ])
        #expect(raw.out.hasPrefix("HTTP/1.1 400"), "\(raw.out) \(raw.err)")
        let lines = gw.running.driver!.hub.logs.lines(try await c.get("net3").metadata.id, limit: 0).lines.map(\.message)
        #expect(!lines.contains { $0.unicodeScalars.contains { $0.value == 0x1b || $0.value == 0x0a } }, "\(lines)")
        // An absolute-form request to an L7 endpoint is inspected: read-only admits GET, refuses POST
        // (which would otherwise reach the upstream: its answer to POST is 501).
        #expect(try await fetch("http://api.l7.test:\(p)/hello.txt") == "hello-from-upstream\n")
        let post = try await c.exec("net3", [Self.curl, "-sS", "-w", "\n%{http_code}", "-X", "POST", "-d", "x", "http://api.l7.test:\(p)/hello.txt"])
        #expect(post.out.hasSuffix("\n403") && post.out.contains("POST /hello.txt not permitted by policy (network policy l7, L7)"), "\(post.out)")
      }
    }
  }

  @Test("a live policy change allows within 1 s, then denies and closes open connections; denials logged and audited")
  func livePolicyAndDenialRecords() async throws {
    let up = try Upstream.start("http")
    let hold = try Upstream.start("hold")
    defer {
      up.stop()
      hold.stop()
    }
    try await withSandboxGateway { gw in
      @Sendable func allowing(_ ports: [Int]) throws -> Openshell_Sandbox_V1_SandboxPolicy {
        try NetworkPolicies.policy(
          ports.isEmpty
            ? ""
            : """
              local:
                endpoints:
                  - host: localhost
                    ports: [\(ports.map(String.init).joined(separator: ", "))]
                    allowed_ips: [127.0.0.0/8]
                binaries:
                  - path: /usr/bin/curl
            """)
      }
      try await gw.withClient { c in
        try await c.createWithPolicy("net4", try allowing([]))
        try await c.wait("net4", .ready)
        try await c.waitLoaded("net4")
        let url = "http://localhost:\(up.port)/hello.txt"
        let denied = try await c.exec("net4", [Self.curl, "-sS", "-w", "%{http_code}", url], env: viaProxy)
        #expect(denied.out.hasSuffix("403"))

        // Allow: effective within 1 s of the push.
        let pushed = ContinuousClock.now
        let v2 = try await c.updatePolicy("net4", try allowing([up.port, hold.port]))
        var allowedAfter: Duration?
        while ContinuousClock.now - pushed < .seconds(3) {
          let r = try await c.exec("net4", [Self.curl, "-sS", url], env: viaProxy)
          if r.exitCode == 0, r.out == "hello-from-upstream\n" {
            allowedAfter = ContinuousClock.now - pushed
            break
          }
        }
        #expect(allowedAfter != nil && allowedAfter! < .seconds(1), "allowed after \(String(describing: allowedAfter))")
        try await c.waitLoaded("net4", version: v2)

        // An open tunnel (to a server that never answers) is closed when the next revision no longer allows it.
        async let held = c.exec("net4", [Self.curl, "-sS", "-p", "--max-time", "20", "http://localhost:\(hold.port)/"], env: viaProxy)
        try await Task.sleep(for: .milliseconds(800))
        let revoked = ContinuousClock.now
        _ = try await c.updatePolicy("net4", try allowing([]))
        let h = try await held
        #expect(h.exitCode != 0 && h.exitCode != 28, "exit \(String(describing: h.exitCode)) \(h.err)")
        #expect(ContinuousClock.now - revoked < .seconds(3))
        var deniedAfter: Duration?
        while ContinuousClock.now - revoked < .seconds(3) {
          let r = try await c.exec("net4", [Self.curl, "-sS", "-w", "%{http_code}", url], env: viaProxy)
          if r.out.hasSuffix("403") {
            deniedAfter = ContinuousClock.now - revoked
            break
          }
        }
        #expect(deniedAfter != nil && deniedAfter! < .seconds(1), "denied after \(String(describing: deniedAfter))")

        // The denials: lines in the sandbox log, and (within one 10 s flush) an audited event.
        // Log lines reach the gateway in batches (every 200 ms): wait for the last one.
        var lines: [String] = []
        let logDeadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < logDeadline {
          lines = try await c.logLines("net4").map(\.message).filter { $0.hasPrefix("network denied:") }
          if lines.count >= 3 { break }
          try await Task.sleep(for: .milliseconds(100))
        }
        #expect(
          lines.contains { $0.contains("localhost:\(up.port)") && $0.contains("/usr/bin/curl") && $0.contains("no network policy has an endpoint") })
        #expect(lines.contains { $0.contains("CLOSE localhost:\(hold.port)") && $0.contains("open connection closed") }, "\(lines)")
        let sandboxID = try await c.get("net4").metadata.id
        var audited: [AuditEntry] = []
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
          var q = AuditQuery()
          q.sandbox = "net4"
          q.types = ["sandbox.network_denials"]
          audited = try Audit.timeline(gw.running.store.log, query: q)
          if !audited.isEmpty { break }
          try await Task.sleep(for: .milliseconds(250))
        }
        #expect(audited.count >= 1)
        #expect(audited.first?.aggregate.contains(sandboxID) == true)
        #expect(audited.first?.summary.contains("localhost:\(up.port) by /usr/bin/curl") == true, "\(audited)")
      }
    }
  }

  @Test("a binary is pinned by SHA-256 on first use; a failed revision keeps the last good policy")
  func pinningAndFailedRevision() async throws {
    let up = try Upstream.start("http")
    defer { up.stop() }
    try await withSandboxGateway { gw in
      let p = up.port
      let policy = try NetworkPolicies.policy(
        """
          local:
            endpoints:
              - host: localhost
                port: \(p)
                allowed_ips: [127.0.0.1]
            binaries:
              - path: /sandbox/tool
        """)
      try await gw.withClient { c in
        try await c.createWithPolicy("net6", policy)
        try await c.wait("net6", .ready)
        try await c.waitLoaded("net6")
        let url = "http://localhost:\(p)/hello.txt"
        _ = try await c.exec("net6", ["/bin/sh", "-c", "cp /usr/bin/curl /sandbox/tool"])
        let first = try await c.exec("net6", ["/sandbox/tool", "-sS", url], env: viaProxy)
        #expect(first.out == "hello-from-upstream\n", "\(first.out) \(first.err)")
        // Same path, other bytes (still a working curl: trailing bytes after the ELF image).
        _ = try await c.exec(
          "net6",
          [
            "/bin/sh", "-c",
            "cat /usr/bin/curl > /sandbox/tool.new && echo tampered >> /sandbox/tool.new && chmod 755 /sandbox/tool.new && mv /sandbox/tool.new /sandbox/tool",
          ])
        let changed = try await c.exec("net6", ["/sandbox/tool", "-sS", "-w", "%{http_code}", url], env: viaProxy)
        #expect(changed.out.hasSuffix("403"), "\(changed.out) \(changed.err)")
        #expect(changed.out.contains("binary /sandbox/tool changed since its first use"))

        // A revision the supervisor rejects (rules and access together) leaves the last good one in force.
        var broken = policy
        broken.networkPolicies["bad"] = .with {
          $0.endpoints = [
            .with {
              $0.host = "x.example.com"; $0.ports = [443]; $0.protocol = "rest"; $0.access = .full
              $0.rules = [.with { $0.allow = .with { $0.method = "GET" } }]
            }
          ]
          $0.binaries = [.with { $0.path = "/usr/bin/curl" }]
        }
        broken.networkPolicies["local"]!.binaries.append(.with { $0.path = "/usr/bin/curl" })
        let v = try await c.updatePolicy("net6", broken)
        var status = Openshell_V1_PolicyStatus.pending
        for _ in 0..<100 where status != .failed {
          status = try await c.getSandboxPolicyStatus(
            .with {
              $0.sandbox = "net6"; $0.version = v; $0.workspaceScope = .with { $0.workspace = "default" }
            }
          ).revision.status
          try await Task.sleep(for: .milliseconds(50))
        }
        #expect(status == .failed)
        let curl = try await c.exec("net6", [Self.curl, "-sS", "-w", "%{http_code}", url], env: viaProxy)
        #expect(curl.out.contains("binary /usr/bin/curl is not listed in the binaries of network policy local"), "\(curl.out)")
      }
    }
  }

  @Test("sandbox network namespaces and veth pairs are removed on delete")
  func cleanup() async throws {
    try await withSandboxGateway { gw in
      let (id, veth) = try await gw.withClient { c -> (String, String) in
        let s = try await c.create("net5")
        try await c.wait("net5", .ready)
        #expect(FileManager.default.fileExists(atPath: SandboxNetworks(sandboxesDirectory: gw.dataDirectory + "/sandboxes").namespaceFile(s.metadata.id)))
        let data = try #require(FileManager.default.contents(atPath: gw.dataDirectory + "/sandboxes/\(s.metadata.id)/network.json"))
        let index = try #require((try JSONSerialization.jsonObject(with: data) as? [String: Any])?["index"] as? Int)
        let veth = "osh\(index)h"
        #expect(FileManager.default.fileExists(atPath: "/sys/class/net/\(veth)"))
        try await c.deleteAndWait("net5")
        return (s.metadata.id, veth)
      }
      #expect(!FileManager.default.fileExists(atPath: SandboxNetworks(sandboxesDirectory: gw.dataDirectory + "/sandboxes").namespaceFile(id)))
      #expect(!FileManager.default.fileExists(atPath: "/run/netns/" + SandboxNetworks.legacyName(id)))
      // The kernel destroys the namespace (and with it the veth pair) asynchronously.
      for _ in 0..<100 where FileManager.default.fileExists(atPath: "/sys/class/net/\(veth)") { try await Task.sleep(for: .milliseconds(20)) }
      #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(veth)"))
    }
  }
}
