import Foundation
import GRPCCore
import OpenShellAPI
import PolicyKit
import Testing

@testable import Gateway

/// SigV4 re-signing (issue 10; upstream `credential_signing`), from inside a real sandbox: curl signs
/// with the placeholder credentials it sees (`--aws-sigv4`), the proxy re-signs with the real ones.
/// The upstream checks every signature with botocore (an independent SigV4 implementation; Debian
/// python3-botocore) against the real secret and logs `SIG path | ok|bad | access key | payload hash
/// header | body sha256 matches`.
extension L7InspectionTests {
  static func sigServer(key: String, secret: String, token: String) -> String {
    """
    import hashlib, http.server, ssl, sys
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    d = sys.argv[1]
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'
        def log_message(self, *a): pass
        def reply(self):
            n = int(self.headers.get('Content-Length') or 0)
            body = self.rfile.read(n) if n else b''
            auth = self.headers.get('Authorization', '')
            ok, key = 'bad', ''
            try:
                parts = dict(p.strip().split('=', 1) for p in auth.split(' ', 1)[1].split(','))
                cred = parts['Credential'].split('/')
                key = cred[0]
                names = parts['SignedHeaders'].split(';')
                req = AWSRequest(method=self.command, url='https://' + self.headers['Host'] + self.path, data=body,
                                 headers={h: self.headers[h] for h in names})
                req.context['timestamp'] = self.headers['X-Amz-Date']
                signer = SigV4Auth(Credentials('\(key)', '\(secret)', '\(token)'), cred[3], cred[2])
                sig = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
                ok = 'ok' if sig == parts['Signature'] and self.headers.get('X-Amz-Security-Token') == '\(token)' else 'bad'
            except Exception as e:
                ok = 'error ' + type(e).__name__
            ph = self.headers.get('X-Amz-Content-Sha256', '')
            match = ph == 'UNSIGNED-PAYLOAD' or ph == hashlib.sha256(body).hexdigest()
            with open(d + '/requests.log', 'a') as f:
                f.write('SIG %s | %s | %s | %s | %s\\n' % (self.path, ok, key, ph, match))
            self.send_response(200 if ok == 'ok' else 403)
            self.send_header('Content-Length', '0')
            self.end_headers()
        do_GET = do_POST = do_PUT = reply
    s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d + '/server.pem', d + '/server.key')
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
    open(sys.argv[2], 'w').write(str(s.server_address[1]))
    s.serve_forever()
    """
  }

  @Test("SigV4: requests signed with placeholders are re-signed with the real credentials, only where the endpoint says so")
  func sigV4() async throws {
    let id = UUID().uuidString.replacingOccurrences(of: "-", with: "")
    let key = "AKIA" + id.prefix(16)
    let secret = "secret/" + id
    let token = "token-" + id
    let up = try TLSUpstream.start(names: ["api.sig.test", "nosig.sig.test"], server: Self.sigServer(key: key, secret: secret, token: token))
    defer { up.stop() }
    let hosts = try TestHosts(["api.sig.test", "nosig.sig.test"])
    defer { hosts.remove() }
    try await withTLSGateway(trusting: up.caPath) { gw in
      let p = up.port
      let policy = try NetworkPolicies.policy(
        """
          aws:
            endpoints:
              - {host: api.sig.test, port: \(p), protocol: rest, access: full, allowed_ips: [127.0.0.1],
                 credential_signing: sigv4, signing_service: execute-api, signing_region: eu-west-3}
              - {host: nosig.sig.test, port: \(p), protocol: rest, access: full, allowed_ips: [127.0.0.1]}
            binaries: [{path: /usr/bin/curl}]
        """)
      #expect(PolicyRules.l7Issues(policy).isEmpty)
      let bad = try NetworkPolicies.policy(
        "  x:\n    endpoints:\n      - {host: a.test, port: 443, protocol: rest, access: full, credential_signing: sigv4}\n    binaries: [{path: /usr/bin/curl}]\n"
      )
      #expect(PolicyRules.l7Issues(bad).map(\.message).contains("signing_service is required when credential_signing is set"))
      try await gw.withClient { c in
        _ = try await c.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "aws"; $0.type = "generic"
              $0.credentials = ["AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token]
            }
          })
        _ = try await c.createSandbox(
          .with {
            $0.name = "l7sig"
            $0.spec = .with {
              $0.policy = policy; $0.providers = ["aws"]
            }
            $0.workspaceScope = .with { $0.workspace = "default" }
          })
        try await c.wait("l7sig", .ready)
        try await c.waitLoaded("l7sig")
        func sig(_ path: String) -> String { up.requests.last { $0.hasPrefix("SIG \(path) ") } ?? "" }
        let curl =
          "curl -sS -o /dev/null -w '%{http_code}' --aws-sigv4 aws:amz:eu-west-3:execute-api --user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\" -H \"X-Amz-Security-Token: $AWS_SESSION_TOKEN\""

        // Signed payload (sigv4 picks it: curl sends the body's hash): re-signed, verified by botocore.
        let post = try await c.exec(
          "l7sig", ["/bin/sh", "-c", curl + " -H 'Content-Type: application/json' --data '{\"a\": 1}' 'https://api.sig.test:\(p)/v1/a%20b/items?z=1&a=x%2Fy'"])
        #expect(post.out == "200", "\(post.out) \(post.err) \(up.requests)")
        #expect(
          sig("/v1/a%20b/items?z=1&a=x%2Fy") == "SIG /v1/a%20b/items?z=1&a=x%2Fy | ok | \(key) | \(TLSUpstream.sha256("{\"a\": 1}")) | True", "\(up.requests)")
        // Unsigned payload requested by the client: signed as UNSIGNED-PAYLOAD, body streamed.
        let unsigned = try await c.exec(
          "l7sig", ["/bin/sh", "-c", curl + " -H 'X-Amz-Content-Sha256: UNSIGNED-PAYLOAD' -X PUT --data 'blob' https://api.sig.test:\(p)/v1/put"])
        #expect(unsigned.out == "200", "\(unsigned.out) \(unsigned.err)")
        #expect(sig("/v1/put") == "SIG /v1/put | ok | \(key) | UNSIGNED-PAYLOAD | True", "\(up.requests)")
        // AWS chunk-signed streaming cannot be re-signed: refused, never forwarded.
        let streaming = try await c.exec(
          "l7sig", ["/bin/sh", "-c", curl + " -H 'X-Amz-Content-Sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD' --data x https://api.sig.test:\(p)/v1/stream"])
        #expect(streaming.out == "400", "\(streaming.out)")
        #expect(sig("/v1/stream").isEmpty)

        // An endpoint without credential_signing: curl's signature, made with what the sandbox holds
        // (placeholders; curl's --user splits at the first ':'), arrives as is and fails.
        let plain = try await c.exec("l7sig", ["/bin/sh", "-c", curl + " https://nosig.sig.test:\(p)/v1/plain"])
        #expect(plain.out == "403", "\(plain.out) \(plain.err)")
        #expect(sig("/v1/plain").hasPrefix("SIG /v1/plain | bad | openshell | "), "\(up.requests)")
        #expect(!up.requests.contains { $0.contains(secret) })

        // Audited (issue 12): each re-signed request used the three AWS keys (the session token was also a
        // header placeholder); the unsigned endpoint got the session token header only; the refused
        // streaming upload used none.
        let api = "api.sig.test:\(p) /usr/bin/curl"
        let expected = [
          "AWS_ACCESS_KEY_ID \(api)": 2, "AWS_SECRET_ACCESS_KEY \(api)": 2, "AWS_SESSION_TOKEN \(api)": 2,
          "AWS_SESSION_TOKEN nosig.sig.test:\(p) /usr/bin/curl": 1,
        ]
        let audited = try await SubstitutionAudit.wait(gw.running.store.log, sandbox: "l7sig", for: expected)
        #expect(audited == expected)
      }
    }
  }
}
