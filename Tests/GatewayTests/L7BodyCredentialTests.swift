import Foundation
import GRPCCore
import OpenShellAPI
import PolicyKit
import Testing

@testable import Gateway

/// Credential placeholders in request bodies, attacked from inside a real sandbox (issue 10; upstream
/// `request_body_credential_rewrite`): resolved (Content-Length fixed, chunked de-chunked) only on an
/// inspected endpoint that opts in; refused before they leave the proxy on other inspected endpoints
/// (also percent-encoded and split into tiny chunks); left as placeholders on a `tls: skip` tunnel.
extension L7InspectionTests {
  @Test("Body placeholders: resolved where the endpoint opts in, refused on other inspected endpoints, untouched when uninspected")
  func bodyPlaceholders() async throws {
    let up = try TLSUpstream.start(names: ["rw.body.test", "plain.body.test", "raw.body.test"])
    defer { up.stop() }
    let hosts = try TestHosts(["rw.body.test", "plain.body.test", "raw.body.test"])
    defer { hosts.remove() }
    let canary = "canary-\(UUID().uuidString)"
    let quoted = "q\"uo\\te-\(UUID().uuidString)"
    try await withTLSGateway(trusting: up.caPath) { gw in
      let p = up.port
      let policy = try NetworkPolicies.policy(
        """
          rw:
            endpoints:
              - host: rw.body.test
                port: \(p)
                protocol: rest
                access: full
                request_body_credential_rewrite: true
                allowed_ips: [127.0.0.1]
              - host: plain.body.test
                port: \(p)
                protocol: rest
                access: full
                allowed_ips: [127.0.0.1]
              - host: raw.body.test
                port: \(p)
                protocol: rest
                tls: skip
                access: full
                allowed_ips: [127.0.0.1]
            binaries:
              - path: /usr/bin/curl
              - path: /usr/bin/python3*
        """)
      // The flag where the proxy cannot see the body is refused at validation.
      let skipped = try NetworkPolicies.policy(
        "  x:\n    endpoints:\n      - {host: a.test, port: 443, protocol: rest, tls: skip, access: full, request_body_credential_rewrite: true}\n    binaries: [{path: /usr/bin/curl}]\n"
      )
      #expect(
        PolicyRules.l7Issues(skipped).map(\.message).contains { $0.hasPrefix("request_body_credential_rewrite requires protocol: rest without tls: skip") })
      #expect(PolicyRules.l7Issues(policy).isEmpty)
      try await gw.withClient { c in
        _ = try await c.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "svc"; $0.type = "generic"; $0.credentials = ["SVC_TOKEN": canary, "QUOTED": quoted]
            }
          })
        _ = try await c.createSandbox(
          .with {
            $0.name = "l7body"
            $0.spec = .with {
              $0.policy = policy; $0.providers = ["svc"]
            }
            $0.workspaceScope = .with { $0.workspace = "default" }
          })
        try await c.wait("l7body", .ready)
        try await c.waitLoaded("l7body")
        func arrived(_ path: String) -> String { up.requests.last { $0.hasPrefix("POST \(path) ") } ?? "" }
        let rw = "https://rw.body.test:\(p)"
        let plain = "https://plain.body.test:\(p)"

        // JSON through curl: the value arrives, JSON-escaped, with the Content-Length of what was sent.
        let json = try await c.exec(
          "l7body",
          [
            "/bin/sh", "-c",
            "curl -sS -w '\\n%{http_code}' -H 'Content-Type: application/json' --data \"{\\\"token\\\": \\\"$SVC_TOKEN\\\", \\\"q\\\": \\\"$QUOTED\\\"}\" \(rw)/json",
          ])
        #expect(json.out.hasSuffix("\n200"), "\(json.out) \(json.err)")
        let sentJSON = "{\"token\": \"\(canary)\", \"q\": \"\(BodyEscape.json(quoted))\"}"
        #expect(arrived("/json").hasSuffix("| \(sentJSON) | cl=\(sentJSON.utf8.count) te="), "\(arrived("/json"))")

        // A chunked form body from python: de-chunked, the field value resolved and re-encoded.
        let form = try await c.exec(
          "l7body",
          [
            "/usr/bin/python3", "-c",
            """
            import os, urllib.request
            def gen():
                yield b'a=1&key='
                yield os.environ['SVC_TOKEN'].encode()
                yield b'&z=%2B'
            r = urllib.request.Request('\(rw)/form', data=gen(), method='POST', headers={'Content-Type': 'application/x-www-form-urlencoded'})
            print(urllib.request.urlopen(r, timeout=10).status)
            """,
          ])
        #expect(form.out == "200\n", "\(form.out) \(form.err)")
        let sentForm = "a=1&key=\(canary)&z=%2B"
        #expect(arrived("/form").hasSuffix("| \(sentForm) | cl=\(sentForm.utf8.count) te="), "\(arrived("/form"))")

        // Refused on the opting-in endpoint: a placeholder in an opaque body, an unknown placeholder.
        for (args, code, reason) in [
          (
            ["-H", "Content-Type: application/octet-stream", "--data-binary", "k=openshell:resolve:env:SVC_TOKEN", rw + "/octet"], "415",
            "placeholders are resolved in application/json"
          ),
          (["-H", "Content-Type: text/plain", "--data", "openshell:resolve:env:NOPE", rw + "/unknown"], "500", "openshell:resolve:env:NOPE has no value"),
        ] {
          let r = try await c.exec("l7body", ["/usr/bin/curl", "-sS", "-w", "\\n%{http_code}"] + args)
          #expect(r.out.hasSuffix("\n" + code) && r.out.contains(reason), "\(args): \(r.out) \(r.err)")
        }
        #expect(arrived("/octet").isEmpty && arrived("/unknown").isEmpty, "\(up.requests)")

        // Over the 256 KiB buffer: forwarded as sent without a placeholder, refused with one at its end.
        let big = try await c.exec(
          "l7body",
          [
            "/usr/bin/python3", "-c",
            """
            import os, urllib.request, urllib.error
            for path, tail in (('/big', b'end'), ('/bigleak', os.environ['SVC_TOKEN'].encode())):
                r = urllib.request.Request('\(rw)' + path, data=b'x' * 300000 + tail, method='POST', headers={'Content-Type': 'text/plain'})
                try: print(urllib.request.urlopen(r, timeout=10).status)
                except urllib.error.HTTPError as e: print(e.code, e.read().decode().strip())
                except Exception as e: print('error', e)
            """,
          ])
        let bigLines = big.out.split(separator: "\n").map(String.init)
        #expect(bigLines.first == "200", "\(big.out) \(big.err)")
        #expect(
          bigLines.count == 2 && bigLines[1].hasPrefix("403 ") && bigLines[1].contains("credential placeholder in the request body"), "\(big.out) \(big.err)")
        #expect(arrived("/big").hasSuffix("xend | cl=300003 te="), "\(arrived("/big").suffix(40))")

        // Inspected endpoint without the flag: a placeholder in the body is refused before it leaves,
        // raw, percent-encoded, or split into 3-byte chunks; an ordinary body goes through.
        let plainRun = try await c.exec(
          "l7body",
          [
            "/usr/bin/python3", "-c",
            """
            import http.client, os, ssl, time
            def post(path, pieces, ctype='application/json'):
                c = http.client.HTTPSConnection('plain.body.test', \(p), context=ssl.create_default_context(), timeout=10)
                ph, pp = os.environ['HTTPS_PROXY'][7:].rsplit(':', 1)
                c.set_tunnel('plain.body.test', \(p)); c.host, c.port = ph, int(pp)
                try:
                    c.putrequest('POST', path); c.putheader('Content-Type', ctype)
                    c.putheader('Transfer-Encoding', 'chunked'); c.endheaders()
                    for x in pieces:
                        c.send(b'%x\\r\\n%s\\r\\n' % (len(x), x)); time.sleep(0.02)
                    c.send(b'0\\r\\n\\r\\n')
                    r = c.getresponse(); print(r.status, r.read().decode().strip()[:200])
                except Exception as e: print('error', type(e).__name__)
            tok = os.environ['SVC_TOKEN'].encode()
            post('/plainok', [b'{"hello": "world"}'])
            post('/plainraw', [b'{"t": "' + tok + b'"}'])
            enc = b''.join(b'%%%02X' % ch for ch in tok)
            post('/plainsplit', [enc[i:i + 3] for i in range(0, len(enc), 3)], 'application/x-www-form-urlencoded')
            """,
          ])
        let plainLines = plainRun.out.split(separator: "\n").map(String.init)
        #expect(plainLines.count == 3, "\(plainRun.out) \(plainRun.err)")
        if plainLines.count == 3 {
          #expect(plainLines[0].hasPrefix("200 "), "\(plainLines[0])")
          for l in plainLines[1...] {
            #expect(l.hasPrefix("403 ") && l.contains("request_body_credential_rewrite is not set"), "\(l)")
          }
        }
        #expect(arrived("/plainok").contains("| {\"hello\": \"world\"} | cl= te=chunked"), "\(arrived("/plainok"))")
        #expect(
          !up.requests.contains {
            $0.contains("openshell") || $0.contains("%6F%70%65") || $0.contains(canary) && !$0.hasPrefix("POST /json ") && !$0.hasPrefix("POST /form ")
          }, "\(up.requests)")

        // tls: skip: tunnelled uninspected; the placeholder in the body stays a placeholder.
        _ = try await c.exec("l7body", ["/bin/sh", "-c", "cat > /tmp/upstream-ca.pem"], stdin: try Data(contentsOf: URL(fileURLWithPath: up.caPath)))
        let raw = try await c.exec(
          "l7body",
          [
            "/bin/sh", "-c",
            "curl -sS --cacert /tmp/upstream-ca.pem -H 'Content-Type: application/json' --data \"{\\\"t\\\": \\\"$SVC_TOKEN\\\"}\" https://raw.body.test:\(p)/raw",
          ])
        #expect(raw.out.contains("\"method\": \"POST\""), "\(raw.out) \(raw.err)")
        #expect(arrived("/raw").contains("| {\"t\": \"openshell:resolve:env:SVC_TOKEN\"} |"), "\(arrived("/raw"))")

        // The refusals are in the sandbox's log, without the value.
        var denied: [String] = []
        for _ in 0..<50 {
          denied = try await c.logLines("l7body").map(\.message).filter { $0.hasPrefix("network denied:") }
          if denied.contains(where: { $0.contains("request_body_credential_rewrite is not set") }) { break }
          try await Task.sleep(for: .milliseconds(100))
        }
        #expect(denied.contains { $0.contains("plain.body.test:\(p)") && $0.contains("request_body_credential_rewrite is not set") }, "\(denied)")
        #expect(!denied.contains { $0.contains(canary) })

        // Audited substitutions (issue 12): the two rewritten bodies, per key and binary; nothing for the
        // refused bodies, the guarded endpoint or the tls: skip tunnel.
        let python = try await c.exec("l7body", ["/usr/bin/python3", "-c", "import os, sys; print(os.path.realpath(sys.executable))"]).out
        let expected = [
          "SVC_TOKEN rw.body.test:\(p) /usr/bin/curl": 1, "QUOTED rw.body.test:\(p) /usr/bin/curl": 1,
          "SVC_TOKEN rw.body.test:\(p) \(python.trimmingCharacters(in: .whitespacesAndNewlines))": 1,
        ]
        let audited = try await SubstitutionAudit.wait(gw.running.store.log, sandbox: "l7body", for: expected)
        #expect(audited == expected)
      }
    }
  }
}

/// The JSON string content of a value (what the proxy must put in a JSON body).
enum BodyEscape {
  static func json(_ s: String) -> String {
    s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
  }
}
