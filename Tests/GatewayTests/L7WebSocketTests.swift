import Foundation
import GRPCCore
import OpenShellAPI
import Testing

@testable import Gateway

/// WebSocket through an L7-inspected endpoint, from inside a real sandbox with python3-websockets
/// (issue 10; upstream `l7/rest.rs` upgrade handling): the upgrade request is decided by the L7 rules,
/// its header placeholders resolved; after the upstream's `101` frames flow both ways (also right
/// after the handshake, binary, and a 2 MB message; placeholders in text messages resolved only with
/// `websocket_credential_rewrite`); a denied path, an h2c upgrade, HTTP/2 with prior
/// knowledge and a malformed WebSocket request are refused; a policy revision that drops the host closes the open WebSocket.
extension L7InspectionTests {
  /// A TLS WebSocket echo server: greets each connection with `hello`, answers text `m` with `echo:m`
  /// and binary as is; logs `OPEN path | X-Api-Key` and `WS path | message` to `requests.log`.
  static let wsServer = """
    import asyncio, ssl, sys, websockets
    d = sys.argv[1]
    def log(line):
        with open(d + '/requests.log', 'a') as f: f.write(line + '\\n')
    async def handler(ws):
        log('OPEN %s | %s' % (ws.path, ws.request_headers.get('X-Api-Key', '')))
        await ws.send('hello')
        async for m in ws:
            log('WS %s | %s' % (ws.path, m[:64] if isinstance(m, str) else 'bin:' + m.hex()))
            await ws.send('echo:' + m if isinstance(m, str) else m)
    async def main():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(d + '/server.pem', d + '/server.key')
        async with websockets.serve(handler, '127.0.0.1', 0, ssl=ctx, max_size=None) as server:
            open(sys.argv[2], 'w').write(str(server.sockets[0].getsockname()[1]))
            await asyncio.Future()
    asyncio.run(main())
    """

  /// The sandbox-side client: CONNECT through the proxy, then websockets over that socket.
  /// argv: path, what to do ("talk" or "hold"), host.
  static func wsClient(_ port: Int) -> String {
    """
    import asyncio, os, socket, ssl, sys, time, websockets
    async def main(path, mode, host):
        ph, pp = os.environ['HTTPS_PROXY'][7:].rsplit(':', 1)
        s = socket.create_connection((ph, int(pp)), timeout=5)
        s.sendall(b'CONNECT %s:\(port) HTTP/1.1\\r\\nHost: %s:\(port)\\r\\n\\r\\n' % (host.encode(), host.encode()))
        resp = b''
        while b'\\r\\n\\r\\n' not in resp: resp += s.recv(1)
        assert b' 200 ' in resp.split(b'\\r\\n')[0], resp
        s.setblocking(False)
        try:
            ws = await websockets.connect('wss://%s:\(port)%s' % (host, path), sock=s, ssl=ssl.create_default_context(),
                server_hostname=host, max_size=None, extra_headers={'X-Api-Key': os.environ['SVC_TOKEN']})
        except websockets.exceptions.InvalidStatusCode as e:
            print('refused', e.status_code); return
        print(await ws.recv())
        await ws.send('ping-1'); print(await ws.recv())
        if mode == 'talk':
            await ws.send(b'\\x00\\x01\\xff'); print((await ws.recv()).hex())
            await ws.send('y' * 2000000); print(len(await ws.recv()))
            await ws.send('tok=' + os.environ['SVC_TOKEN']); await ws.recv()
            await ws.send(['frag-', os.environ['SVC_TOKEN'], '-end']); await ws.recv(); print('tok')
            await ws.close(); return
        t = time.monotonic()
        try:
            await asyncio.wait_for(ws.recv(), 30); print('still open')
        except websockets.exceptions.ConnectionClosed:
            print('closed after %.1f s' % (time.monotonic() - t))
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else 'ws.l7.test'))
    """
  }

  @Test("WebSocket through an inspected endpoint: rules decide the upgrade, frames relayed both ways, revocation closes it")
  func webSocket() async throws {
    let up = try TLSUpstream.start(names: ["ws.l7.test", "ws2.l7.test"], server: Self.wsServer)
    defer { up.stop() }
    let hosts = try TestHosts(["ws.l7.test", "ws2.l7.test"])
    defer { hosts.remove() }
    let canary = "canary-\(UUID().uuidString)"
    try await withTLSGateway(trusting: up.caPath) { gw in
      let p = up.port
      func policy(_ host: String) throws -> Openshell_Sandbox_V1_SandboxPolicy {
        try NetworkPolicies.policy(
          """
            ws:
              endpoints:
                - host: \(host)
                  port: \(p)
                  protocol: rest
                  allowed_ips: [127.0.0.1]
                  rules:
                    - allow: {method: GET, path: "/ws/**"}
                - host: ws2.l7.test
                  port: \(p)
                  protocol: rest
                  allowed_ips: [127.0.0.1]
                  websocket_credential_rewrite: true
                  access: read-only
              binaries:
                - path: /usr/bin/python3*
          """)
      }
      let initial = try policy("ws.l7.test")
      let revised = try policy("other.l7.test")
      try await gw.withClient { c in
        _ = try await c.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "svc"; $0.type = "generic"; $0.credentials = ["SVC_TOKEN": canary]
            }
          })
        _ = try await c.createSandbox(
          .with {
            $0.name = "l7ws"
            $0.spec = .with {
              $0.policy = initial; $0.providers = ["svc"]
            }
            $0.workspaceScope = .with { $0.workspace = "default" }
          })
        try await c.wait("l7ws", .ready)
        try await c.waitLoaded("l7ws")
        let client = Self.wsClient(p)

        // Allowed: greeting right after the 101, text, binary and 2 MB both ways; header placeholder resolved.
        let talk = try await c.exec("l7ws", ["/usr/bin/python3", "-c", client, "/ws/chat", "talk"])
        #expect(talk.out == "hello\necho:ping-1\n0001ff\n2000005\ntok\n", "\(talk.out) \(talk.err)")
        #expect(up.requests.contains("OPEN /ws/chat | \(canary)"), "\(up.requests)")
        #expect(up.requests.contains("WS /ws/chat | bin:0001ff"), "\(up.requests)")
        // Without websocket_credential_rewrite a placeholder in a message stays a placeholder ...
        #expect(up.requests.contains("WS /ws/chat | tok=openshell:resolve:env:SVC_TOKEN"), "\(up.requests)")
        #expect(up.requests.contains("WS /ws/chat | frag-openshell:resolve:env:SVC_TOKEN-end"), "\(up.requests)")
        // ... with it, text messages (also a fragment) carry the value; the 2 MB frame passes unparsed.
        let talk2 = try await c.exec("l7ws", ["/usr/bin/python3", "-c", client, "/ws/two", "talk", "ws2.l7.test"])
        #expect(talk2.out == "hello\necho:ping-1\n0001ff\n2000005\ntok\n", "\(talk2.out) \(talk2.err)")
        #expect(up.requests.contains("WS /ws/two | tok=\(canary)"), "\(up.requests)")
        #expect(up.requests.contains("WS /ws/two | frag-\(canary)-end"), "\(up.requests)")

        // Denied by the L7 rules: never reaches the server.
        let denied = try await c.exec("l7ws", ["/usr/bin/python3", "-c", client, "/admin", "talk"])
        #expect(denied.out == "refused 403\n", "\(denied.out) \(denied.err)")
        #expect(!up.requests.contains { $0.contains("/admin") })

        // h2c (HTTP/2 is not inspected) and a malformed WebSocket request are refused by the proxy.
        let raw = try await c.exec(
          "l7ws",
          [
            "/usr/bin/python3", "-c",
            """
            import os, socket, ssl
            def send(req):
                ph, pp = os.environ['HTTPS_PROXY'][7:].rsplit(':', 1)
                s = socket.create_connection((ph, int(pp)), timeout=5)
                s.sendall(b'CONNECT ws.l7.test:\(p) HTTP/1.1\\r\\nHost: ws.l7.test:\(p)\\r\\n\\r\\n')
                assert b' 200 ' in s.recv(4096)
                t = ssl.create_default_context().wrap_socket(s, server_hostname='ws.l7.test')
                t.sendall(req)
                print(t.recv(4096).split(b'\\r\\n')[0].decode())
            send(b'GET /ws/x HTTP/1.1\\r\\nHost: ws.l7.test:\(p)\\r\\nConnection: Upgrade, HTTP2-Settings\\r\\nUpgrade: h2c\\r\\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\\r\\n\\r\\n')
            send(b'GET /ws/x HTTP/1.1\\r\\nHost: ws.l7.test:\(p)\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n')
            send(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n')
            """,
          ])
        // (HTTP/2 with prior knowledge is refused too: upstream's L7 speaks HTTP/1.1 only.)
        #expect(raw.out == "HTTP/1.1 403 Forbidden\nHTTP/1.1 400 Bad Request\nHTTP/1.1 400 Bad Request\n", "\(raw.out) \(raw.err)")

        // An open WebSocket is closed when a revision no longer allows its host.
        async let held = c.exec("l7ws", ["/usr/bin/python3", "-c", client, "/ws/held", "hold"])
        for _ in 0..<100 where !up.requests.contains("WS /ws/held | ping-1") {
          try await Task.sleep(for: .milliseconds(100))
        }
        #expect(up.requests.contains("WS /ws/held | ping-1"))
        let v = try await c.updatePolicy("l7ws", revised)
        try await c.waitLoaded("l7ws", version: v)
        let heldOut = try await held.out
        #expect(heldOut.hasPrefix("hello\necho:ping-1\nclosed after "), "\(heldOut)")
        let after = Double(heldOut.split(separator: " ").dropLast().last ?? "") ?? 99
        #expect(after < 5, "\(heldOut)")

        var lines: [String] = []
        for _ in 0..<50 {
          lines = try await c.logLines("l7ws").map(\.message).filter { $0.hasPrefix("network denied:") }
          if lines.contains(where: { $0.contains("h2c") }) { break }
          try await Task.sleep(for: .milliseconds(100))
        }
        #expect(lines.contains { $0.contains("GET /admin not permitted by policy") }, "\(lines)")
        #expect(lines.contains { $0.contains("HTTP/2 cleartext upgrade (h2c) is not supported") }, "\(lines)")

        // Audited substitutions (issue 12): each upgrade request's header; on ws2 also each text frame that
        // carried the value (the plain message and the fragment); nothing for the refused /admin.
        let python = try await c.exec("l7ws", ["/usr/bin/python3", "-c", "import os, sys; print(os.path.realpath(sys.executable))"]).out
        let binary = python.trimmingCharacters(in: .whitespacesAndNewlines)
        let expected = ["SVC_TOKEN ws.l7.test:\(p) \(binary)": 2, "SVC_TOKEN ws2.l7.test:\(p) \(binary)": 3]
        let audited = try await SubstitutionAudit.wait(gw.running.store.log, sandbox: "l7ws", for: expected)
        #expect(audited == expected)
      }
    }
  }
}
