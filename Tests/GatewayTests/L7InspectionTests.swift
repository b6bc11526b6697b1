import Foundation
import GRPCCore
import OpenShellAPI
import Testing

@testable import Gateway

/// L7 inspection and credential placeholders seen from inside a real sandbox (issue 10): the proxy
/// terminates TLS with the sandbox's own CA for `protocol: rest` endpoints, decides each request by
/// method and path, verifies the upstream's certificate, and resolves provider placeholders only in
/// the requests it inspects and allows. The upstream is a python3 HTTPS server on 127.0.0.1 with a
/// test CA (trusted by the proxy through the gateway's `upstreamTrustFile`), reached through
/// `allowed_ips`; its names are /etc/hosts entries for the duration of the test.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct L7InspectionTests {
  static let curl = "/usr/bin/curl"

  @Test("TLS terminated with the sandbox CA; method/path rules; placeholders resolved only where inspected and allowed")
  func inspectedTLS() async throws {
    let up = try TLSUpstream.start(names: ["api.l7.test", "raw.l7.test"])
    defer { up.stop() }
    // bad.l7.test is not in the upstream certificate: the proxy must refuse to forward to it.
    let hosts = try TestHosts(["api.l7.test", "raw.l7.test", "bad.l7.test"])
    defer { hosts.remove() }
    let canary = "canary-\(UUID().uuidString)"
    try await withTLSGateway(trusting: up.caPath) { gw in
      let p = up.port
      let policy = try NetworkPolicies.policy(
        """
          api:
            endpoints:
              - host: api.l7.test
                port: \(p)
                protocol: rest
                allowed_ips: [127.0.0.1]
                rules:
                  - allow: {method: GET, path: "/v1/**"}
                  - allow: {method: POST, path: /v1/items}
                deny_rules:
                  - {method: GET, path: "/v1/secret/**"}
              - host: bad.l7.test
                port: \(p)
                protocol: rest
                access: full
                allowed_ips: [127.0.0.1]
            binaries:
              - path: /usr/bin/curl
              - path: /usr/bin/python3*
          raw:
            endpoints:
              - host: raw.l7.test
                port: \(p)
                protocol: rest
                tls: skip
                access: read-only
                allowed_ips: [127.0.0.1]
            binaries:
              - path: /usr/bin/curl
        """)
      try await gw.withClient { c in
        _ = try await c.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "svc"; $0.type = "generic"; $0.credentials = ["SVC_TOKEN": canary]
            }
          })
        _ = try await c.createSandbox(
          .with {
            $0.name = "l7a"
            $0.spec = .with {
              $0.policy = policy; $0.providers = ["svc"]
            }
            $0.workspaceScope = .with { $0.workspace = "default" }
          })
        try await c.wait("l7a", .ready)
        try await c.waitLoaded("l7a")
        let base = "https://api.l7.test:\(p)"

        // The CA variables, as OpenShell sets them; the trust directory holds certificates only.
        let env = try await c.exec("l7a", ["/usr/bin/env"]).out
        for v in [
          "SSL_CERT_FILE=/var/lib/openshell-tls/ca-bundle.pem", "REQUESTS_CA_BUNDLE=/var/lib/openshell-tls/ca-bundle.pem",
          "CURL_CA_BUNDLE=/var/lib/openshell-tls/ca-bundle.pem", "GIT_SSL_CAINFO=/var/lib/openshell-tls/ca-bundle.pem",
          "NODE_EXTRA_CA_CERTS=/var/lib/openshell-tls/openshell-ca.pem", "DENO_CERT=/var/lib/openshell-tls/openshell-ca.pem",
        ] {
          #expect(env.contains(v + "\n"), "\(v)")
        }
        let trust = try await c.exec(
          "l7a",
          [
            "/bin/sh", "-c",
            "ls /var/lib/openshell-tls; grep -c 'BEGIN CERTIFICATE' /var/lib/openshell-tls/ca-bundle.pem; grep -l 'PRIVATE KEY' /var/lib/openshell-tls/* || echo no-key; touch /var/lib/openshell-tls/x 2>&1 || true",
          ])
        let lines = trust.out.split(separator: "\n").map(String.init)
        #expect(lines.prefix(2) == ["ca-bundle.pem", "openshell-ca.pem"], "\(trust.out) \(trust.err)")
        #expect((lines.count > 2 ? Int(lines[2]) ?? 0 : 0) > 1, "the bundle holds the system roots and the sandbox CA: \(trust.out)")
        #expect(trust.out.contains("no-key\n"))
        #expect(trust.out.contains("Permission denied") || trust.out.contains("Read-only"), "\(trust.out)")

        // Allowed GET through TLS, verified by curl against the sandbox CA (no -k anywhere).
        let get = try await c.exec("l7a", [Self.curl, "-sS", "-w", "\\n%{http_code} %{ssl_verify_result}", base + "/v1/items?x=1"])
        #expect(get.exitCode == 0, "\(get.err)")
        #expect(get.out.contains("\"method\": \"GET\"") && get.out.contains("\"path\": \"/v1/items?x=1\""), "\(get.out)")
        #expect(get.out.hasSuffix("\n200 0"), "\(get.out)")
        // The leaf is issued by the sandbox CA for the requested host.
        let issuer = try await c.exec("l7a", [Self.curl, "-sS", "-v", "-o", "/dev/null", base + "/v1/x"])
        #expect(
          issuer.err.contains("issuer: O=OpenShell; CN=OpenShell Sandbox CA") || issuer.err.contains("issuer: O = OpenShell, CN = OpenShell Sandbox CA"),
          "\(issuer.err)")
        #expect(issuer.err.contains("subject: CN=api.l7.test") || issuer.err.contains("subject: CN = api.l7.test"), "\(issuer.err)")

        // python3 (urllib: SSL_CERT_FILE) allowed too; an allowed POST carries its body.
        let py = try await c.exec(
          "l7a",
          [
            "/usr/bin/python3", "-c",
            """
            import json, urllib.request, urllib.error
            def call(method, path, data=None):
                req = urllib.request.Request('\(base)' + path, data=data, method=method)
                try:
                    with urllib.request.urlopen(req, timeout=10) as r: return r.status, r.read().decode()
                except urllib.error.HTTPError as e: return e.code, e.read().decode()
            print(call('GET', '/v1/hello'))
            print(call('POST', '/v1/items', b'new-item'))
            print(call('POST', '/v1/admin', b'x'))
            """,
          ])
        #expect(py.exitCode == 0, "\(py.err)")
        let pyLines = py.out.split(separator: "\n").map(String.init)
        #expect(pyLines.count == 3, "\(py.out) \(py.err)")
        if pyLines.count == 3 {
          #expect(pyLines[0].hasPrefix("(200,") && pyLines[0].contains("/v1/hello"))
          #expect(pyLines[1].hasPrefix("(200,") && pyLines[1].contains("new-item"))
          #expect(pyLines[2].hasPrefix("(403,") && pyLines[2].contains("POST /v1/admin not permitted by policy (network policy api, L7)"), "\(pyLines[2])")
        }

        // `Expect: 100-continue`: the upstream's 100 reaches the client before it sends the body.
        let expect = try await c.exec(
          "l7a",
          [
            "/usr/bin/python3", "-c",
            """
            import os, socket, ssl
            ph, pp = os.environ['HTTPS_PROXY'][7:].rsplit(':', 1)
            s = socket.create_connection((ph, int(pp)), timeout=5)
            s.sendall(b'CONNECT api.l7.test:\(p) HTTP/1.1\\r\\nHost: api.l7.test:\(p)\\r\\n\\r\\n')
            assert b' 200 ' in s.recv(4096)
            t = ssl.create_default_context().wrap_socket(s, server_hostname='api.l7.test')
            t.sendall(b'POST /v1/items HTTP/1.1\\r\\nHost: api.l7.test\\r\\nContent-Length: 5\\r\\nExpect: 100-continue\\r\\n\\r\\n')
            print(t.recv(4096).split(b'\\r\\n')[0].decode())
            t.sendall(b'hello')
            print(t.recv(4096).split(b'\\r\\n')[0].decode())
            """,
          ])
        #expect(expect.out == "HTTP/1.1 100 Continue\nHTTP/1.1 200 OK\n", "\(expect.out) \(expect.err)")

        // Denied: a method the rules do not list, a deny rule, a path escaping /v1 by dot segments.
        for (args, reason) in [
          (["-X", "DELETE", base + "/v1/items"], "DELETE /v1/items not permitted by policy"),
          ([base + "/v1/secret/k"], "GET /v1/secret/k blocked by deny rule"),
          (["--path-as-is", base + "/v1/../admin"], "GET /admin not permitted by policy"),
          // Another virtual host behind the admitted connection (with a placeholder to resolve): refused.
          (["-H", "Host: evil.l7.test:\(p)", "-H", "X-Leak: openshell:resolve:env:SVC_TOKEN", base + "/v1/items/leak"], "Host header evil.l7.test"),
        ] {
          let r = try await c.exec("l7a", [Self.curl, "-sS", "-w", "\\n%{http_code}"] + args)
          #expect(r.out.hasSuffix("\n403") && r.out.contains(reason), "\(args): \(r.out) \(r.err)")
        }
        #expect(!up.requests.contains { $0.contains("/admin") || $0.hasPrefix("DELETE") || $0.contains("/secret") || $0.contains("/leak") }, "\(up.requests)")

        // The proxy verifies the upstream: a certificate not valid for the host is never forwarded to.
        let bad = try await c.exec("l7a", [Self.curl, "-sS", "-w", "\\n%{http_code}", "https://bad.l7.test:\(p)/v1/x"])
        #expect(bad.out.hasSuffix("\n502") && bad.out.contains("upstream bad.l7.test:\(p)"), "\(bad.out) \(bad.err)")

        // Credentials: the sandbox holds only the placeholder; the upstream receives the value.
        let printed = try await c.exec("l7a", ["/usr/bin/printenv", "SVC_TOKEN"])
        #expect(printed.out == "openshell:resolve:env:SVC_TOKEN\n")
        let environ = try await c.exec("l7a", ["/bin/sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c '\(canary)' || true"])
        #expect(environ.out == "0\n", "\(environ.out)")
        let authed = try await c.exec(
          "l7a",
          [
            "/bin/sh", "-c",
            "curl -sS -H \"Authorization: Bearer $SVC_TOKEN\" -u \"bot:$SVC_TOKEN\" -H \"X-Api-Key: $SVC_TOKEN\" '\(base)/v1/auth?k='\"$SVC_TOKEN\"",
          ])
        #expect(authed.out.contains(TLSUpstream.sha256(canary)), "\(authed.out) \(authed.err)")
        let arrived = up.requests.last { $0.contains("/v1/auth") } ?? ""
        #expect(arrived.contains("| \(canary) |"), "X-Api-Key resolved: \(arrived)")
        #expect(arrived.contains("?k=\(canary)"), "query value resolved: \(arrived)")
        #expect(!arrived.contains("openshell:resolve"), "\(arrived)")
        // An unknown placeholder fails closed (500), a denied request never resolves one.
        let unknown = try await c.exec("l7a", [Self.curl, "-sS", "-w", "\\n%{http_code}", "-H", "X-Api-Key: openshell:resolve:env:NOPE", base + "/v1/x"])
        #expect(unknown.out.hasSuffix("\n500") && unknown.out.contains("openshell:resolve:env:NOPE has no value"), "\(unknown.out)")

        // tls: skip: tunnelled uninspected (end-to-end TLS with the upstream's own CA), placeholder untouched.
        _ = try await c.exec("l7a", ["/bin/sh", "-c", "cat > /tmp/upstream-ca.pem"], stdin: try Data(contentsOf: URL(fileURLWithPath: up.caPath)))
        let raw = try await c.exec(
          "l7a", ["/bin/sh", "-c", "curl -sS --cacert /tmp/upstream-ca.pem -X POST -H \"X-Api-Key: $SVC_TOKEN\" https://raw.l7.test:\(p)/anything"])
        #expect(raw.out.contains("\"method\": \"POST\""), "\(raw.out) \(raw.err)")
        #expect(up.requests.last { $0.contains("/anything") }?.contains("| openshell:resolve:env:SVC_TOKEN |") == true, "\(up.requests)")

        // Rotation: the next request carries the new value, without restarting the sandbox.
        let rotated = canary + "-rotated"
        _ = try await c.updateProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "svc"; $0.credentials = ["SVC_TOKEN": rotated]
            }
          })
        var seen = ""
        for _ in 0..<50 {
          _ = try await c.exec("l7a", ["/bin/sh", "-c", "curl -sS -H \"X-Api-Key: $SVC_TOKEN\" \(base)/v1/rot"])
          seen = up.requests.last { $0.contains("/v1/rot") } ?? ""
          if seen.contains(rotated) { break }
          try await Task.sleep(for: .milliseconds(100))
        }
        #expect(seen.contains("| \(rotated) |"), "\(seen)")

        // Denials are in the sandbox's log with method, path and binary.
        var denied: [String] = []
        for _ in 0..<50 {
          denied = try await c.logLines("l7a").map(\.message).filter { $0.hasPrefix("network denied:") }
          if denied.contains(where: { $0.contains("DELETE /v1/items") }) { break }
          try await Task.sleep(for: .milliseconds(100))
        }
        #expect(
          denied.contains { $0.contains("api.l7.test:\(p)") && $0.contains("/usr/bin/curl") && $0.contains("DELETE /v1/items not permitted by policy") },
          "\(denied)")
        #expect(!denied.contains { $0.contains(canary) })
      }
    }
  }
}

/// Runs `body` with a fresh gateway whose sandboxes' proxies also trust `caPath` upstream.
func withTLSGateway(trusting caPath: String, _ body: (SandboxGateway) async throws -> Void) async throws {
  let gw = try await SandboxGateway.start { $0.upstreamTrustFile = caPath }
  do { try await body(gw) } catch {
    await gw.stopEverything()
    throw error
  }
  await gw.stopEverything()
}
