import Foundation
import Testing

/// `openshell service expose|list|get|delete` against a real daemon and sandbox: a python HTTP
/// server on the sandbox's loopback fetched with curl through the gateway's port (issue 11).
@Suite("CLI exposed services", .serialized, .timeLimit(.minutes(10)))
struct ServiceCLITests {
  /// Answers every request with one line: method, path, the Authorization header, X-Forwarded-Prefix
  /// and the SHA-256 of the body (Content-Length or chunked).
  static let server = """
    import hashlib, http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def answer(self):
            body = b''
            if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
                while True:
                    size = int(self.rfile.readline().split(b';')[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    body += self.rfile.read(size)
                    self.rfile.readline()
            else:
                n = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(n) if n else b''
            line = '%s %s auth=%s prefix=%s sha=%s\\n' % (self.command, self.path, self.headers.get('Authorization', 'none'),
                self.headers.get('X-Forwarded-Prefix', '-'), hashlib.sha256(body).hexdigest())
            data = line.encode()
            self.send_response(200); self.send_header('Content-Length', str(len(data))); self.end_headers()
            self.wfile.write(data)
        do_GET = do_POST = do_PUT = answer
        def log_message(self, *a): pass
    http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
    """

  @Test("expose, fetch through the gateway with curl, authorization modes, refusals, list/get/delete, audit")
  func exposedServices() async throws {
    let env = try CLIEnv("svc")
    defer { env.cleanup() }
    var r = try env.run(["gateway", "start", "--name", "svcgw", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "box"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["sandbox", "delete", "box"]) }
    let mtls = env.config.appendingPathComponent("openshell/gateways/svcgw/mtls").path
    let tls = ["--cacert", mtls + "/ca.crt", "--cert", mtls + "/tls.crt", "--key", mtls + "/tls.key"]
    func curl(_ args: [String]) throws -> CLIEnv.Result {
      try env.run(["-s", "-m", "10", "--noproxy", "*"] + args, binary: "/usr/bin/curl")
    }

    let port = freePort()
    let script = env.root.appendingPathComponent("srv.py").path
    try Self.server.write(toFile: script, atomically: true, encoding: .utf8)
    r = try env.run(["-c", "'\(CLIEnv.openshell)' sandbox exec box -- sh -c 'cat > /sandbox/srv.py' < '\(script)'"], binary: "/bin/sh")
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "exec", "box", "--", "sh", "-c", "setsid python3 /sandbox/srv.py \(port) >/dev/null 2>&1 </dev/null &"])
    try #require(r.code == 0, "\(r)")

    // The unnamed service: the URL is printed; the Authorization header is stripped (default mode).
    r = try env.run(["service", "expose", "box", "\(port)"])
    try #require(r.code == 0, "\(r)")
    let url = try #require(r.out.split(separator: " ").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) })
    #expect(url.hasSuffix("/_svc/default/box/_/") && url.hasPrefix("https://127.0.0.1:"), "\(r)")
    var body = ""
    for _ in 0..<50 {
      let c = try curl(tls + ["-H", "Authorization: Bearer secret-abc", url + "echo/path?q=1"])
      if c.code == 0, c.out.hasPrefix("GET") { body = c.out; break }
      try await Task.sleep(for: .milliseconds(200))
    }
    #expect(body.hasPrefix("GET /echo/path?q=1 auth=none prefix=/_svc/default/box/_ sha="), "\(body)")

    // A 300 KB body arrives intact (plain and chunked).
    let payload = env.root.appendingPathComponent("payload.bin").path
    FileManager.default.createFile(atPath: payload, contents: Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }))
    let digest = String(try env.run([payload], binary: "/usr/bin/sha256sum").out.prefix(64))
    r = try curl(tls + ["--data-binary", "@" + payload, url + "up"])
    #expect(r.out == "POST /up auth=none prefix=/_svc/default/box/_ sha=\(digest)\n", "\(r)")
    r = try curl(tls + ["-X", "PUT", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + payload, url + "up"])
    #expect(r.out == "PUT /up auth=none prefix=/_svc/default/box/_ sha=\(digest)\n", "\(r)")

    // A named service with bearer passthrough: the service sees the caller's header.
    r = try env.run(["service", "expose", "box", "\(port)", "api", "--authorization", "bearer-passthrough"])
    #expect(r.code == 0 && r.out.contains("/_svc/default/box/api/"), "\(r)")
    let api = url.replacingOccurrences(of: "/_/", with: "/api/")
    r = try curl(tls + ["-H", "Authorization: Bearer secret-abc", api])
    #expect(r.out.hasPrefix("GET / auth=Bearer secret-abc "), "\(r)")
    r = try curl(tls + ["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", String(api.dropLast())])
    #expect(r.out == "308 \(api)", "\(r)")

    // Refusals: no client certificate (TLS refused), a sandbox's certificate (403), plaintext on the TLS
    // port (closed, or 403 where plaintext probes are allowed), an unknown service (404), a port nobody listens on (502).
    r = try curl(["--cacert", mtls + "/ca.crt", url])
    #expect(r.code != 0 && !r.out.contains("GET"), "\(r)")
    let sandboxes = env.dataDir("svcgw").appendingPathComponent("sandboxes").path
    let id = try #require(try FileManager.default.contentsOfDirectory(atPath: sandboxes).first)
    let run = "\(sandboxes)/\(id)/run"
    r = try curl(["--cacert", mtls + "/ca.crt", "--cert", run + "/tls.crt", "--key", run + "/tls.key", "-w", "%{http_code}", url])
    #expect(r.out.hasSuffix("403") && !r.out.contains("GET"), "\(r)")
    r = try curl(["-w", "%{http_code}", url.replacingOccurrences(of: "https://", with: "http://")])
    #expect(!r.out.contains("GET"), "\(r)")
    r = try curl(tls + ["-w", "%{http_code}", url.replacingOccurrences(of: "/_/", with: "/nope/")])
    #expect(r.out.hasSuffix("404") && r.out.contains("exposes no service nope"), "\(r)")
    let idle = freePort()
    r = try env.run(["service", "expose", "box", "\(idle)", "idle"])
    #expect(r.code == 0, "\(r)")
    r = try curl(tls + ["-w", "%{http_code}", url.replacingOccurrences(of: "/_/", with: "/idle/")])
    #expect(r.out.hasSuffix("502") && r.out.contains("nothing answers on port \(idle)"), "\(r)")

    // list / get / delete; bad input is one readable line.
    r = try env.run(["service", "list", "box"])
    #expect(r.code == 0 && r.out.contains("(unnamed)") && r.out.contains("api") && r.out.contains("bearer-passthrough"), "\(r)")
    r = try env.run(["service", "get", "box", "api", "-o", "json"])
    #expect(r.code == 0 && r.out.contains("\"target_port\" : \(port)") && r.out.contains(api), "\(r)")
    r = try env.run(["service", "delete", "box", "api"])
    #expect(r.code == 0, "\(r)")
    r = try curl(tls + ["-w", "%{http_code}", api])
    #expect(r.out.hasSuffix("404"), "\(r)")
    r = try env.run(["service", "get", "box", "api"])
    #expect(r.code == 1 && r.err.contains("not found"), "\(r)")
    r = try env.run(["service", "expose", "box", "80", "Bad_Name"])
    #expect(r.code == 1 && r.err.contains("service") && r.err.split(separator: "\n").count == 1, "\(r)")
    r = try env.run(["service", "expose", "nobox", "80"])
    #expect(r.code == 1 && r.err.contains("not found"), "\(r)")

    // Every expose and delete is in the log.
    r = try env.replay(["audit", env.dataDir("svcgw").appendingPathComponent("log").path])
    #expect(r.out.contains("service (unnamed) of sandbox \(id) exposed: port \(port), authorization strip"), "\(r.out.suffix(2000))")
    #expect(r.out.contains("service api of sandbox \(id) exposed: port \(port), authorization bearer passthrough"), "\(r.out.suffix(2000))")
    #expect(r.out.contains("service api of sandbox \(id) deleted"), "\(r.out.suffix(2000))")
  }
}
