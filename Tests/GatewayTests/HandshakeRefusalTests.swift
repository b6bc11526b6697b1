import EventLog
import Foundation
import Gateway
import LogTools
import Projections
import Synchronization
import Testing

/// Clients refused during the TLS handshake become aggregated `audit.access_refused` records (issue 12),
/// driven by real TLS clients (python3's ssl module, openssl, curl) against a real mTLS gateway.
@Suite("TLS handshake refusals", .serialized)
struct HandshakeRefusalTests {
  static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
  static let clients = repo + "/Tests/audit-tools/tls_clients.py"

  /// Runs Tests/audit-tools/tls_clients.py; returns its outcome counts.
  static func clients(
    _ mode: String, _ gw: TestGateway, count: Int, cert: String? = nil, key: String? = nil, extra: [String] = []
  ) async throws -> [String: Int] {
    var args = [clients, mode, "127.0.0.1", "\(gw.port)", "\(count)", "--ca", gw.pki + "/ca.crt"] + extra
    if let cert, let key { args += ["--cert", cert, "--key", key] }
    let r = try await GatewayTestSupport.run("/usr/bin/python3", args)
    try #require(r.status == 0, "\(r.stderr)")
    return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Int] ?? [:]
  }

  /// A certificate from a CA the gateway never saw (made with openssl): (cert, key) paths.
  static func foreignCertificate(_ dir: String) async throws -> (String, String) {
    let script = """
      set -e
      cd "$0"
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout fca.key -out fca.crt -subj /CN=foreign-ca -days 2 2>/dev/null
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout in.key -out in.csr -subj /O=openshell/OU=operator/CN=intruder 2>/dev/null
      openssl x509 -req -in in.csr -CA fca.crt -CAkey fca.key -CAcreateserial -out in.crt -days 2 2>/dev/null
      """
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let r = try await GatewayTestSupport.run("/bin/sh", ["-c", script, dir])
    try #require(r.status == 0, "\(r.stderr)")
    return (dir + "/in.crt", dir + "/in.key")
  }

  static func refusals(_ dataDirectory: String) throws -> [Openshell_Events_V1_AccessRefused] {
    try AuditTests.auditEvents(dataDirectory, type: "audit.access_refused").compactMap { _, e in
      if case .accessRefused(let a)? = e.kind { return a } else { return nil }
    }
  }

  @Test(
    "1,000 handshakes without a client certificate are one event with count 1000; a foreign CA and an expired certificate are two more kinds; an authenticated client and ordinary disconnects none"
  )
  func floodAndKinds() async throws {
    let gw = try await TestGateway.start { $0.refusalWindow = .seconds(600) }  // one window; flushed at shutdown
    let noCert = try await Self.clients("handshake", gw, count: 1000)
    #expect(noCert == ["TLSV13_ALERT_CERTIFICATE_REQUIRED": 1000], "every client was refused in the handshake: \(noCert)")

    let (foreign, foreignKey) = try await Self.foreignCertificate(gw.dataDirectory + "/foreign")
    let byForeign = try await Self.clients("handshake", gw, count: 5, cert: foreign, key: foreignKey)
    #expect(byForeign == ["TLSV1_ALERT_UNKNOWN_CA": 5], "\(byForeign)")

    let expired = try gw.running.pki!.issueSandboxCertificate(sandboxID: "sb-old", now: Date() - 7200, lifetime: 600)
    let dir = gw.dataDirectory + "/expired"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try expired.certificatePEM.write(toFile: dir + "/c.crt", atomically: true, encoding: .utf8)
    try expired.privateKeyPEM.write(toFile: dir + "/c.key", atomically: true, encoding: .utf8)
    let byExpired = try await Self.clients("handshake", gw, count: 3, cert: dir + "/c.crt", key: dir + "/c.key")
    #expect(byExpired == ["SSLV3_ALERT_CERTIFICATE_EXPIRED": 3], "\(byExpired)")

    // Not recorded: a TCP probe, a client giving up after its ClientHello, an authenticated client.
    _ = try await Self.clients("tcp-close", gw, count: 20)
    _ = try await Self.clients("hello-close", gw, count: 20)
    // curl without the gateway's CA refuses the gateway: its own alert, a reason of its own (TLS 1.2 and 1.3).
    for tls in ["1.2", "1.3"] {
      let curl = try await GatewayTestSupport.run(
        "/usr/bin/curl", ["-sS", "--max-time", "10", "--tls-max", tls, "--tlsv\(tls)", "https://127.0.0.1:\(gw.port)/healthz"])
      #expect(curl.status != 0 && curl.stderr.contains("certificate"), "curl refused the gateway's certificate: \(curl.stderr)")
    }
    try await gw.withClient { api in _ = try await api.health(.init()) }
    // Plaintext gRPC on the mTLS port (no plaintext probes admitted here): the TLS stack refuses it.
    let plain = try await Self.clients("plaintext-grpc", gw, count: 2)
    #expect(plain.values.reduce(0, +) == 2, "\(plain)")
    await gw.stop()

    let all = try Self.refusals(gw.dataDirectory)
    let described = all.map { "\($0.identity) \($0.rpc) \($0.reason) ×\($0.count)" }
    #expect(all.count == 6, "no certificate, foreign CA, expired, two client aborts, plaintext: \(described)")
    #expect(all.allSatisfy { $0.rpc == "tls-handshake" && $0.code == "UNAUTHENTICATED" && $0.peer.hasPrefix("ipv4:127.0.0.1:") }, "\(described)")
    let none = try #require(all.first { $0.reason == "no client certificate" }, "\(described)")
    #expect(none.count == 1000 && none.identity == "unauthenticated" && none.lastNs >= none.firstNs, "\(described)")
    let unknown = try #require(all.first { $0.reason == "client certificate not issued by the gateway CA" }, "\(described)")
    #expect(unknown.count == 5 && unknown.identity == "unverified" && unknown.claimedSubject.contains("CN=intruder"), "\(described)")
    #expect(unknown.distinctSubjects == 1 && unknown.distinctPeers == 1, "\(described)")
    let old = try #require(all.first { $0.reason == "client certificate expired" }, "\(described)")
    #expect(old.count == 3 && old.identity == "unverified" && old.claimedSubject.contains("CN=sandbox:sb-old"), "\(described)")
    let aborts = all.filter { $0.reason.hasPrefix("client aborted the handshake: ") }.map(\.reason).sorted()
    #expect(aborts == ["client aborted the handshake: BAD_PACKET_LENGTH", "client aborted the handshake: TLSV1_ALERT_UNKNOWN_CA"], "\(described)")
    let wrongProtocol = try #require(all.first { $0.reason.hasPrefix("protocol error: ") }, "\(described)")
    #expect(wrongProtocol.reason == "protocol error: WRONG_VERSION_NUMBER" && wrongProtocol.count == 2, "\(described)")
    #expect(wrongProtocol.identity == "unauthenticated", "\(described)")
  }

  @Test(
    "a client forging a new subject per handshake (a CA of its own, 3 source addresses) is one record per reason: count, distinct subjects and addresses, and a first subject escaped and capped in the table, JSON and valid OCSF"
  )
  func forgedSubjectsAreOneRecord() async throws {
    let gw = try await TestGateway.start { $0.refusalWindow = .seconds(600) }  // one window; flushed at shutdown
    let dir = gw.dataDirectory + "/forged"
    let forge = try await GatewayTestSupport.run("/usr/bin/python3", [Self.repo + "/Tests/audit-tools/forge_certs.py", dir, "200", "--evil"])
    try #require(forge.status == 0, "\(forge.stderr)")
    // 201 handshakes: the evil subject first (from 127.0.0.1; given time to reach the aggregator, which keeps the
    // first claim it sees), then forged-0…forged-199 from 127.0.0.1, .2 and .3 in turn.
    let evil = try await Self.clients("handshake", gw, count: 1, cert: dir + "/evil.crt", key: dir + "/evil.key")
    #expect(evil == ["TLSV1_ALERT_UNKNOWN_CA": 1], "\(evil)")
    try await Task.sleep(for: .milliseconds(500))
    let list = try String(contentsOfFile: dir + "/certs.txt", encoding: .utf8).split(separator: "\n").dropFirst()
    try (list.joined(separator: "\n") + "\n").write(toFile: dir + "/forged.txt", atomically: true, encoding: .utf8)
    let sources = ["--cert-list", dir + "/forged.txt", "--sources", "127.0.0.1,127.0.0.2,127.0.0.3"]
    let outcome = try await Self.clients("handshake", gw, count: 200, extra: sources)
    #expect(outcome == ["TLSV1_ALERT_UNKNOWN_CA": 200], "every forged certificate was refused: \(outcome)")
    await gw.stop()

    let all = try Self.refusals(gw.dataDirectory)
    let described = all.map { "\($0.identity) \($0.reason) ×\($0.count) subjects \($0.distinctSubjects) peers \($0.distinctPeers)" }
    #expect(all.count == 1, "one record, however many subjects were claimed: \(described)")
    let r = try #require(all.first)
    #expect(r.identity == "unverified" && r.rpc == "tls-handshake" && r.reason == "client certificate not issued by the gateway CA", "\(described)")
    #expect(r.count == 201 && r.distinctSubjects == 201 && r.distinctPeers == 3, "\(described)")
    #expect(r.peer.hasPrefix("ipv4:127.0.0.1:"), "the first peer: \(r.peer)")
    // The first claim, escaped and capped: no control character, no bidi override, at most 256 bytes.
    let sample = r.claimedSubject
    #expect(sample.utf8.count <= 256 && sample.utf8.count > 200, "\(sample.utf8.count) bytes")
    #expect(sample.contains("evil\\nline\\u{001B}[31m\\u{202E}AAAA"), "\(sample)")
    #expect(!sample.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F || $0.value == 0x202E }, "\(sample)")
    #expect(sample.hasSuffix(" bytes)") && sample.contains("…("), "the truncation says how long the claim was: \(sample)")

    // What `openshell audit` (and openshell-replay audit) show of it: table, JSON and OCSF.
    var o = EventLog.Options()
    o.readOnly = true
    let log = try EventLog.open(directory: gw.dataDirectory + "/log", options: o)
    defer { log.close() }
    var q = AuditQuery()
    q.types = ["audit.access_refused"]
    let entries = try Audit.timeline(log, query: q, ocsf: true)
    try #require(entries.count == 1)
    let table = Audit.table(entries)
    #expect(table.split(separator: "\n").count == 2, "header and one row, no line forged by the subject: \(table)")
    #expect(table.contains("for unverified from ipv4:127.0.0.1:") && table.contains("(3 addresses)") && table.contains("(201 distinct subjects)"), "\(table)")
    #expect(entries[0].actor == "unverified" && !table.contains("\u{1B}"), "\(table)")
    // -o json (the entries without their OCSF events): the record stays small whatever was claimed.
    let json = String(decoding: try JSONEncoder().encode(try Audit.timeline(log, query: q)), as: UTF8.self)
    #expect(json.contains("claimed subject") && json.contains("201 distinct subjects") && json.utf8.count < 1024, "\(json.utf8.count): \(json)")
    let ocsf = try #require(entries[0].ocsf?.first)
    let event = try #require(try JSONSerialization.jsonObject(with: Data(ocsf.utf8)) as? [String: Any])
    let unmapped = try #require(event["unmapped"] as? [String: Any], "\(ocsf)")
    #expect(unmapped["claimed_subject"] as? String == sample && unmapped["distinct_subjects"] as? Int == 201, "\(ocsf)")
    #expect(unmapped["distinct_peers"] as? Int == 3 && event["count"] as? Int == 201, "\(ocsf)")
    #expect((event["user"] as? [String: Any])?["uid"] as? String == "unverified", "\(ocsf)")
    let file = dir + "/refusal.ocsf.jsonl"
    try (ocsf + "\n").write(toFile: file, atomically: true, encoding: .utf8)
    let v = try await GatewayTestSupport.run(Self.repo + "/.build-venv-audit/bin/python", [Self.repo + "/Tests/audit-tools/validate_ocsf.py", file])
    #expect(v.status == 0 && v.stdout.contains(" 0 invalid"), "the new shape validates against OCSF 1.5.0: \(v)")
  }

  @Test("on a TLS port that admits plaintext probes, plaintext gRPC is a distinct refusal and a probe is none")
  func plaintextOnTLSPort() async throws {
    let dir = try GatewayTestSupport.temporaryDirectory()
    let pki = try GatewayPKI.loadOrCreate(directory: dir + "/pki", gatewayHosts: ["127.0.0.1"])
    var configuration = GatewayServer.Configuration(host: "127.0.0.1", port: 0, security: .mutualTLS)
    configuration.handleSignals = false
    configuration.allowPlaintextProbes = true
    let seen = Mutex<[HandshakeRefusal]>([])
    let server = try GatewayServer(
      configuration: configuration, pki: pki, services: [], readiness: { .ready(version: "t", headSeq: 0) }, metrics: GatewayMetrics(),
      handshakeRefusals: { r in seen.withLock { $0.append(r) } })
    let task = Task { try await server.run() }
    let port = try #require(await server.listeningPort)
    let h2c = try await GatewayTestSupport.run(
      "/usr/bin/curl", ["-sS", "--max-time", "10", "--http2-prior-knowledge", "http://127.0.0.1:\(port)/healthz"])
    #expect(h2c.status != 0, "plaintext HTTP/2 is refused")
    let probe = try await GatewayTestSupport.run("/usr/bin/curl", ["-sS", "--max-time", "10", "http://127.0.0.1:\(port)/healthz"])
    #expect(probe.status == 0 && probe.stdout.hasPrefix("ok"), "\(probe)")
    server.requestShutdown()
    try await task.value
    let got = seen.withLock { $0 }
    #expect(got.count == 1, "\(got)")
    #expect(got.first?.reason == HandshakeRefusal.Reason.plaintextGRPC && got.first?.identity == "unauthenticated")
    #expect(got.first?.peer.hasPrefix("ipv4:127.0.0.1:") == true, "\(got)")
  }
}
