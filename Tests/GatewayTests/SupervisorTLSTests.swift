import Foundation
import SandboxProtocol
import Testing
import X509

@testable import Gateway

/// The supervisor verifies the gateway's host name, not only its chain (issue 16, TLS): the built
/// `openshell-sandbox` dials a TLS server on 127.0.0.1 whose certificate is signed by the CA the
/// supervisor is given. The server (python3 `ssl`) records per connection whether the client went on
/// to send the HTTP/2 preface ("trusted": it accepted the certificate) or closed the connection after
/// the handshake (swift-nio-ssl checks the host name once the handshake is done).
@Suite(.serialized) struct SupervisorTLSTests {
  /// Handshake outcomes the server recorded after the supervisor ran for a while, and its stderr.
  func dial(sans: [GeneralName], withCA: Bool = true, otherCA: Bool = false) throws -> (handshakes: [String], stderr: String, exited: Int32?) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sup-tls-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let now = Date()
    let ca = try CertificateFactory.makeCA(now: now)
    let leaf = try CertificateFactory.makeLeaf(.server(sans: sans), ca: ca.certificate, caKey: ca.key, now: now)
    // otherCA: the supervisor is given a CA that did not sign the server's certificate.
    let given = otherCA ? try CertificateFactory.makeCA(now: now).certificate : ca.certificate
    try (try given.serializeAsPEM().pemString + "\n").write(toFile: dir + "/ca.pem", atomically: true, encoding: .utf8)
    try (try leaf.certificate.serializeAsPEM().pemString + "\n").write(toFile: dir + "/server.pem", atomically: true, encoding: .utf8)
    try leaf.key.pemRepresentation.write(toFile: dir + "/server.key", atomically: true, encoding: .utf8)
    let script = """
      import socket, ssl, sys
      d = sys.argv[1]
      ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
      ctx.load_cert_chain(d + '/server.pem', d + '/server.key')
      ctx.set_alpn_protocols(['h2'])
      s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)
      open(d + '/port.tmp', 'w').write(str(s.getsockname()[1]))
      while True:
          c, _ = s.accept()
          try:
              t = ctx.wrap_socket(c, server_side=True)
              t.settimeout(5)
              outcome = 'trusted' if t.recv(24).startswith(b'PRI * HTTP/2.0') else 'closed'
              t.close()
          except Exception as e:
              outcome = 'fail ' + type(e).__name__
              c.close()
          with open(d + '/handshakes', 'a') as f: f.write(outcome + '\\n')
      """
    let server = try Spawner.spawn("/usr/bin/python3", ["-c", script, dir], environment: ["PATH": "/usr/bin:/bin"])
    defer {
      kill(server.pid, SIGKILL)
      _ = Spawner.waitBlocking(server.pid)
    }
    var port = 0
    for _ in 0..<500 where port == 0 {
      port = (try? String(contentsOfFile: dir + "/port.tmp", encoding: .utf8)).flatMap { Int($0) } ?? 0
      if port == 0 { usleep(10_000) }
    }
    try #require(port > 0, "the test TLS server did not start")
    var environment = [
      "PATH": "/usr/bin:/bin", SandboxProtocol.envSandboxID: "tls-test", SandboxProtocol.envEndpoint: "https://127.0.0.1:\(port)",
    ]
    if withCA { environment[SandboxProtocol.envTLSCA] = dir + "/ca.pem" }
    let supervisor = try Spawner.spawn(
      LocalComputeDriver.defaultSupervisorBinary(), [], environment: environment, stderr: .appendFile(dir + "/stderr"))
    var exited: Int32?
    // Several connection attempts (the supervisor retries about once a second).
    for _ in 0..<30 {
      usleep(100_000)
      if let code = Spawner.poll(supervisor.pid) {
        exited = code
        break
      }
    }
    if exited == nil {
      kill(supervisor.pid, SIGKILL)
      _ = Spawner.waitBlocking(supervisor.pid)
    }
    let handshakes = ((try? String(contentsOfFile: dir + "/handshakes", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    return (handshakes, (try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? "", exited)
  }

  @Test("a gateway certificate naming the dialled address is trusted")
  func namedAddressIsTrusted() throws {
    let r = try dial(sans: [HostAddress.generalName(for: "127.0.0.1")!])
    #expect(r.handshakes.first == "trusted", "\(r)")
  }

  @Test("a gateway certificate from the right CA that does not name the dialled address is refused, with the reason")
  func otherNameIsRefused() throws {
    let r = try dial(sans: [.dnsName("elsewhere.invalid"), HostAddress.generalName(for: "127.0.0.2")!])
    #expect(!r.handshakes.isEmpty, "the supervisor dialled: \(r)")
    #expect(!r.handshakes.contains("trusted"), "no connection may be used: \(r)")
    #expect(
      r.stderr.contains(
        "openshell-sandbox: session: the gateway's certificate does not name the host of OPENSHELL_ENDPOINT (https://127.0.0.1:"),
      "\(r.stderr)")
  }

  @Test("a gateway certificate naming the address but signed by another CA is refused, with the reason")
  func otherCAIsRefused() throws {
    let r = try dial(sans: [HostAddress.generalName(for: "127.0.0.1")!], otherCA: true)
    #expect(!r.handshakes.isEmpty && !r.handshakes.contains("trusted"), "\(r)")
    #expect(r.stderr.contains("openshell-sandbox: session: the gateway's certificate was refused ("), "\(r.stderr)")
    #expect(r.stderr.contains("it must be signed by the CA in OPENSHELL_TLS_CA"), "\(r.stderr)")
  }

  @Test("an https endpoint without the gateway's CA is refused at start (never the system's roots)")
  func missingCAIsRefused() throws {
    let r = try dial(sans: [HostAddress.generalName(for: "127.0.0.1")!], withCA: false)
    #expect(r.handshakes.isEmpty, "\(r)")
    #expect(r.exited == 2, "\(r)")
    #expect(r.stderr.contains("OPENSHELL_TLS_CA is not set: refusing to trust the system's roots"), "\(r.stderr)")
  }

  @Test("the gateway's server certificate names the address supervisors dial")
  func serverCertificateNamesDialHost() throws {
    var c = GatewayConfiguration(dataDirectory: "/nonexistent")
    #expect(c.supervisorDialHost == "127.0.0.1")
    c.bindAddress = "::"
    #expect(c.supervisorDialHost == "127.0.0.1")
    c.bindAddress = "127.0.0.2"
    #expect(c.supervisorDialHost == "127.0.0.2")
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sup-pki-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let pki = try GatewayPKI.loadOrCreate(directory: dir, gatewayHosts: c.gatewayHosts + [c.supervisorDialHost])
    let names = try CertificateFactory.subjectAlternativeNameStrings(pki.serverCertificate)
    #expect(names.contains("IP:127.0.0.2") && names.contains("IP:127.0.0.1"), "\(names)")
  }
}
