import EventLog
import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import Testing

@testable import Gateway

/// ForwardTcp with `tcp` targets (port forwarding to a port on the sandbox's loopback, issue 11): a real
/// python http.server inside a real sandbox reached from the host through the gateway; bad targets and a
/// port nobody listens on refused with their status. Serialized with the other local-driver tests.
extension SandboxLifecycleTests {
  /// Sends one HTTP/1.0 GET through ForwardTcp to `target` and returns everything the far end sent.
  static func forwardGet(_ c: OSClient, sandbox: String, token: String, host: String = "127.0.0.1", port: UInt32, path: String) async throws -> String {
    try await c.forwardTcp(
      request: StreamingClientRequest { writer in
        try await writer.write(
          .with {
            $0.init_p = .with {
              $0.sandbox = sandbox;
              $0.tcp = .with {
                $0.host = host; $0.port = port
              }; $0.authorizationToken = token
            }
          })
        try await writer.write(.with { $0.data = Data("GET \(path) HTTP/1.0\r\nHost: localhost\r\n\r\n".utf8) })
        try await Task.sleep(for: .seconds(10))
      }
    ) { response in
      var bytes = Data()
      for try await frame in response.messages { if case .data(let d)? = frame.payload { bytes.append(d) } }
      return String(decoding: bytes, as: UTF8.self)
    }
  }

  @Test(
    "ForwardTcp tcp target: host → gateway → python http.server in the sandbox; bad host/port INVALID_ARGUMENT, closed port UNAVAILABLE, bad token refused; audited"
  )
  func tcpForward() async throws {
    let dir = try GatewayTestSupport.temporaryDirectory("tcpfwd")
    let gw = try await SandboxGateway.start(dataDirectory: dir)
    defer { Task { await gw.stopEverything() } }
    let port = UInt32(21_000 + Int.random(in: 0..<2000))
    let marker = "forwarded-\(UUID().uuidString.prefix(8))"
    let sandboxID = try await gw.withClient { c -> String in
      let s = try await c.create("tcp-fwd")
      try await c.wait("tcp-fwd", .ready)
      let session = try await Self.session(c, "tcp-fwd")
      let started = try await c.exec(
        "tcp-fwd",
        [
          "sh", "-c",
          "mkdir -p /sandbox/www && echo \(marker) > /sandbox/www/index.html && cd /sandbox/www && "
            + "setsid python3 -m http.server \(port) --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &",
        ])
      #expect(started.exitCode == 0, "\(started)")

      // Until the server listens, the supervisor refuses: UNAVAILABLE naming the port.
      var page = ""
      var lastError: RPCError?
      for _ in 0..<100 where page.isEmpty {
        do {
          page = try await Self.forwardGet(c, sandbox: s.metadata.id, token: session.token, port: port, path: "/index.html")
        } catch let e as RPCError {
          lastError = e
          #expect(e.code == .unavailable && e.message.contains("127.0.0.1:\(port)"), "\(e)")
          try await Task.sleep(for: .milliseconds(100))
        }
      }
      #expect(page.hasPrefix("HTTP/1.0 200") && page.contains(marker), "\(page) \(String(describing: lastError))")
      // By name, with `localhost`, works too.
      let again = try await Self.forwardGet(c, sandbox: "tcp-fwd", token: session.token, host: "localhost", port: port, path: "/index.html")
      #expect(again.contains(marker), "\(again)")

      func refusal(host: String = "127.0.0.1", port: UInt32, token: String) async -> RPCError? {
        do {
          _ = try await Self.forwardGet(c, sandbox: s.metadata.id, token: token, host: host, port: port, path: "/")
          return nil
        } catch let e as RPCError { return e } catch { return RPCError(code: .unknown, message: "\(error)") }
      }
      // A port nobody listens on: refused at once (not a 10 s timeout), UNAVAILABLE naming it.
      let closedPort = port + 1
      let t0 = ContinuousClock.now
      let closed = await refusal(port: closedPort, token: session.token)
      #expect(closed?.code == .unavailable && closed?.message.contains("127.0.0.1:\(closedPort)") == true, "\(String(describing: closed))")
      #expect(ContinuousClock.now - t0 < .seconds(5))
      let zero = await refusal(port: 0, token: session.token)
      #expect(zero?.code == .invalidArgument && zero?.message.contains("init.tcp.port") == true, "\(String(describing: zero))")
      let big = await refusal(port: 70_000, token: session.token)
      #expect(big?.code == .invalidArgument && big?.message.contains("1-65535") == true, "\(String(describing: big))")
      // Only the sandbox's own loopback: never another host (the host's or anything routable).
      for host in ["10.0.0.1", "::1", "example.com", "0.0.0.0"] {
        let e = await refusal(host: host, port: port, token: session.token)
        #expect(e?.code == .invalidArgument && e?.message.contains("init.tcp.host") == true, "\(host): \(String(describing: e))")
      }
      // The session token is required as for ssh.
      let noToken = await refusal(port: port, token: "")
      #expect(noToken?.code == .unauthenticated, "\(String(describing: noToken))")
      let revoked = try await Self.session(c, "tcp-fwd")
      _ = try await c.revokeSshSession(.with { $0.token = revoked.token })
      let e = await refusal(port: port, token: revoked.token)
      #expect(e?.code == .permissionDenied, "\(String(describing: e))")
      return s.metadata.id
    }
    // Each forward that opened is in the log with its target and byte counts.
    var opened = 0
    var closedEvents: [Openshell_Events_V1_SshTunnelClosed] = []
    for record in try gw.running.store.log.records(from: 1) {
      let event = try GatewayEvent.decode(record)
      if case .sshTunnelOpened(let o)? = event.kind, o.target == "tcp:127.0.0.1:\(port)", o.sandboxID == sandboxID { opened += 1 }
      if case .sshTunnelClosed(let c)? = event.kind, c.sandboxID == sandboxID { closedEvents.append(c) }
    }
    #expect(opened == 2, "\(opened)")
    #expect(closedEvents.count == 2 && closedEvents.allSatisfy { $0.bytesToSandbox > 30 && $0.bytesFromSandbox > 100 }, "\(closedEvents)")
    try await gw.withClient { c in try await c.deleteAndWait("tcp-fwd") }
    await gw.stopEverything()
  }
}
