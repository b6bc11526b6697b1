import Crypto
import Foundation
import GRPCCore
import SandboxProtocol
import X509

@testable import Gateway

/// A test CA and an HTTPS upstream on 127.0.0.1 signed by it (a python3 `ssl` server started and
/// ended by the test). The server answers every method with JSON `{method, path, body,
/// authorization_sha256, api_key_sha256}` (digests, so the credential never travels back into the
/// sandbox) and appends each request as one line `METHOD PATH | Authorization | X-Api-Key | body |
/// cl=<Content-Length> te=<Transfer-Encoding>` to `requestLog` on the host (a chunked body de-chunked,
/// line breaks as `\n`), where the test reads what really arrived.
final class TLSUpstream: Sendable {
  let pid: Int32
  let port: Int
  let directory: String
  var caPath: String { directory + "/test-ca.pem" }
  var requestLog: String { directory + "/requests.log" }

  /// - Parameters:
  ///   - names: the DNS names the server certificate holds.
  ///   - server: another python3 server (argv: directory with `server.pem`/`server.key`, port file to
  ///     write); the default is the HTTPS echo server described above.
  static func start(names: [String], server: String? = nil) throws -> TLSUpstream {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tls-upstream-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let now = Date()
    let ca = try CertificateFactory.makeCA(now: now)
    let leaf = try CertificateFactory.makeLeaf(.server(sans: names.map { .dnsName($0) }), ca: ca.certificate, caKey: ca.key, now: now)
    try (try ca.certificate.serializeAsPEM().pemString + "\n").write(toFile: dir + "/test-ca.pem", atomically: true, encoding: .utf8)
    try (try leaf.certificate.serializeAsPEM().pemString + "\n").write(toFile: dir + "/server.pem", atomically: true, encoding: .utf8)
    try leaf.key.pemRepresentation.write(toFile: dir + "/server.key", atomically: true, encoding: .utf8)
    _ = FileManager.default.createFile(atPath: dir + "/requests.log", contents: Data())
    let script = """
      import hashlib, http.server, json, ssl, sys
      d = sys.argv[1]
      def sha(v): return hashlib.sha256(v.encode()).hexdigest() if v else ''
      class H(http.server.BaseHTTPRequestHandler):
          protocol_version = 'HTTP/1.1'
          def log_message(self, *a): pass
          def reply(self):
              te = self.headers.get('Transfer-Encoding', '')
              if te.lower() == 'chunked':
                  raw = b''
                  while True:
                      size = int(self.rfile.readline().split(b';')[0], 16)
                      if size == 0:
                          while self.rfile.readline() not in (b'\\r\\n', b''): pass
                          break
                      raw += self.rfile.read(size); self.rfile.readline()
              else:
                  n = int(self.headers.get('Content-Length') or 0)
                  raw = self.rfile.read(n) if n else b''
              body = raw.decode(errors='replace')
              auth, key = self.headers.get('Authorization', ''), self.headers.get('X-Api-Key', '')
              with open(d + '/requests.log', 'a') as f:
                  f.write('%s %s | %s | %s | %s | cl=%s te=%s\\n' % (self.command, self.path, auth, key,
                          body.replace('\\n', '\\\\n'), self.headers.get('Content-Length', ''), te))
              out = json.dumps({'method': self.command, 'path': self.path, 'body': body,
                                'authorization_sha256': sha(auth), 'api_key_sha256': sha(key)}).encode()
              self.send_response(200)
              self.send_header('Content-Type', 'application/json')
              self.send_header('Content-Length', str(len(out)))
              self.end_headers()
              if self.command != 'HEAD': self.wfile.write(out)
          do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = reply
      s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
      ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
      ctx.load_cert_chain(d + '/server.pem', d + '/server.key')
      s.socket = ctx.wrap_socket(s.socket, server_side=True)
      open(sys.argv[2], 'w').write(str(s.server_address[1]))
      s.serve_forever()
      """
    let portFile = dir + "/port.tmp"
    let p = try Spawner.spawn("/usr/bin/python3", ["-c", server ?? script, dir, portFile], environment: ["PATH": "/usr/bin:/bin"])
    for _ in 0..<500 {
      if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let n = Int(text) {
        return TLSUpstream(pid: p.pid, port: n, directory: dir)
      }
      Thread.sleep(forTimeInterval: 0.01)
    }
    kill(p.pid, SIGKILL)
    _ = Spawner.waitBlocking(p.pid)
    throw RPCError(code: .internalError, message: "TLS upstream did not start")
  }

  init(pid: Int32, port: Int, directory: String) {
    self.pid = pid
    self.port = port
    self.directory = directory
  }

  /// The request lines received so far.
  var requests: [String] {
    ((try? String(contentsOfFile: requestLog, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
  }

  static func sha256(_ s: String) -> String { SHA256.hash(data: Data(s.utf8)).map { String(format: "%02x", $0) }.joined() }

  func stop() {
    kill(pid, SIGKILL)
    _ = Spawner.waitBlocking(pid)
    try? FileManager.default.removeItem(atPath: directory)
  }
}
