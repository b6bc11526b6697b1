import Foundation
import Testing

/// `openshell audit`, `audit verify`, `sandbox get --at` against a real daemon, and the signed checkpoints
/// checked by `openshell-replay verify --public-key` (issue 12).
@Suite("CLI audit", .serialized, .timeLimit(.minutes(10)))
struct AuditCLITests {
  @Test("audit lists and filters; audit verify and replay verify accept the gateway's key and refuse another")
  func auditAndSignedCheckpoints() async throws {
    let env = try CLIEnv("audit")
    defer { env.cleanup() }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "aud", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["gateway", "destroy", "--name", "aud", "--yes"]) }
    r = try env.run(["provider", "create", "--name", "p1", "--type", "generic", "--credential", "TOKEN=v1"])
    #expect(r.code == 0, "\(r)")

    // The operator's copy of the public key, taken before anything could tamper with the data dir.
    let keyCopy = env.root.appendingPathComponent("checkpoint.pub.pem").path
    try FileManager.default.copyItem(atPath: env.dataDir("aud").appendingPathComponent("keys/audit-checkpoint.pub.pem").path, toPath: keyCopy)

    r = try env.run(["audit", "--type", "provider.", "-o", "jsonl"])
    #expect(r.code == 0, "\(r)")
    let lines = r.out.split(separator: "\n")
    #expect(lines.count == 1 && lines[0].contains("\"type\":\"provider.created\"") && lines[0].contains("p1"), "\(r)")
    #expect(!r.out.contains("v1\""), "no credential value")
    // OCSF: every event of the live trail validates against the OCSF schema; no credential value in it.
    r = try env.run(["audit", "-o", "ocsf"])
    #expect(r.code == 0 && r.out.contains("\"event_code\":\"provider.created\"") && r.out.contains("\"class_uid\":6003"), "\(r)")
    #expect(!r.out.contains("v1\""), "no credential value")
    try expectValidOCSF(env, r.out, "live")
    // --follow (WatchEventBatches): the history, then a provider created while it runs; no credential value.
    let followed = env.root.appendingPathComponent("follow.jsonl").path
    let script = """
      "$0" audit --follow --type provider. -o jsonl > "$1" 2>&1 &
      pid=$!
      "$0" provider create --name p2 --type generic --credential TOKEN=v2 > /dev/null || exit 3
      for i in $(seq 200); do grep -q '"provider default/p2' "$1" && break; sleep 0.1; done
      kill $pid; wait $pid 2>/dev/null; cat "$1"
      """
    r = try env.run(["-c", script, CLIEnv.openshell, followed], binary: "/bin/sh")
    let follow = try Self.records(r.out)
    #expect(follow.map { $0["type"] } == ["provider.created", "provider.created"], "\(r)")
    #expect(follow.map { ($0["summary"] ?? "").hasPrefix("provider default/p1") } == [true, false], "\(r)")
    #expect(follow.last?["summary"]?.hasPrefix("provider default/p2") == true && !r.out.contains("v2\""), "\(r)")
    #expect(follow.compactMap { UInt64($0["seq"] ?? "") }.sorted() == follow.compactMap { UInt64($0["seq"] ?? "") }, "in seq order")
    r = try env.run(["audit", "--since", "yesterday"])
    #expect(r.code != 0 && r.err.contains("--since"), "\(r)")

    // The start-up checkpoint already vouches for the log.
    r = try env.run(["audit", "verify", "--public-key", keyCopy])
    #expect(r.code == 0 && r.out.hasPrefix("OK: "), "\(r)")
    // The records after the start-up checkpoint are named, as openshell-replay verify names them.
    #expect(r.out.contains("\nUNSIGNED TAIL: records ") && r.out.contains("not yet covered by a signed checkpoint"), "\(r)")
    let liveTail = r.out.split(separator: "\n").first { $0.hasPrefix("UNSIGNED TAIL") }.map(String.init) ?? "?"
    // A sandbox the log never held is NOT_FOUND, one line (a deleted one is still found: CLI audit supervisorSessions).
    r = try env.run(["audit", "--sandbox", "nosuch"])
    #expect(r.code != 0 && r.err == "error: sandbox \"nosuch\" not found: no record of the log names it\n", "\(r)")
    let stranger = env.root.appendingPathComponent("stranger.pem").path
    let gen = try env.run(["-c", "openssl genpkey -algorithm ed25519 | openssl pkey -pubout > \(stranger)"], binary: "/bin/sh")
    try #require(gen.code == 0, "\(gen)")
    r = try env.run(["audit", "verify", "--public-key", stranger])
    #expect(r.code != 0 && r.err.contains("no checkpoint") && r.err.contains("by other keys"), "\(r)")
    r = try env.run(["audit", "verify", "--public-key", "/nonexistent.pem"])
    #expect(r.code != 0 && r.err.contains("/nonexistent.pem"), "\(r)")

    // On the live log (its writer lock is held by the running gateway) the records after the start-up checkpoint
    // are expected: OK, with the same UNSIGNED TAIL line as audit verify (and the gateway's pid).
    let log = env.dataDir("aud").appendingPathComponent("log").path
    r = try env.replay(["verify", log, "--public-key", keyCopy])
    #expect(r.code == 0 && r.out.hasPrefix("OK: ") && r.out.contains(liveTail + " (pid "), "\(r)")
    r = try env.replay(["verify", log, "--public-key", keyCopy, "--allow-unsigned-tail"])
    #expect(r.code == 0, "\(r)")
    r = try env.replay(["verify", log, "--public-key", keyCopy, "-o", "json"])
    #expect(r.code == 0 && r.out.contains("\"unsignedTail\" : ["), "json: \(r)")

    // The same proof offline, from the data dir after a stop (the shutdown checkpoint covers the rest).
    r = try env.run(["gateway", "stop", "--name", "aud"])
    #expect(r.code == 0, "\(r)")
    r = try env.replay(["verify", log, "--public-key", keyCopy])
    #expect(r.code == 0 && r.out.contains("signed: ") && r.out.contains("vouched for by the key"), "\(r)")
    // The shutdown checkpoint is the head and signs the record before it: the line says why the head is not "vouched for".
    let head = try #require(r.out.firstMatch(of: /OK: ([0-9]+) records, head seq ([0-9]+)/), "\(r)")
    #expect(r.out.contains("records 1…\(Int(head.2)! - 1) vouched for by the key; record \(head.2) is that checkpoint itself"), "\(r)")
    r = try env.replay(["verify", log, "--public-key", stranger])
    #expect(r.code != 0 && r.out.contains("FAILED"), "\(r)")
    // The same OCSF export offline, from the data dir.
    r = try env.replay(["audit", log, "-o", "ocsf"])
    #expect(r.code == 0 && r.out.contains("\"class_uid\":6003") && !r.out.contains("v1\""), "\(r)")
    try expectValidOCSF(env, r.out, "offline")
    r = try env.replay(["audit", log, "-o", "xml"])
    #expect(r.code != 0 && r.err.contains("ocsf"), "\(r)")
    r = try env.replay(["audit", log, "--sandbox", "nosuch"])
    #expect(r.code != 0 && r.err == "error: sandbox \"nosuch\" not found: no record of the log names it\n", "\(r)")

    // A log no gateway holds with records after its last checkpoint (a gateway that crashed: started again, one
    // record appended, killed before it could sign): FAILED, unless accepted explicitly.
    r = try env.run(["gateway", "start", "--name", "aud", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["provider", "create", "--name", "p3", "--type", "generic", "--credential", "TOKEN=v3"])
    #expect(r.code == 0, "\(r)")
    let holder = try String(contentsOfFile: log + "/writer.lock", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    let pid = try #require(Int32(holder), "the gateway's pid in writer.lock: \(holder)")
    #expect(kill(pid, SIGKILL) == 0)
    for _ in 0..<100 where kill(pid, 0) == 0 { usleep(50_000) }
    r = try env.replay(["verify", log, "--public-key", keyCopy])
    #expect(r.code != 0 && r.out.hasPrefix("FAILED: ") && r.out.contains("no gateway holds the log"), "\(r)")
    r = try env.replay(["verify", log, "--public-key", keyCopy, "--allow-unsigned-tail"])
    #expect(r.code == 0 && !r.out.contains("UNSIGNED TAIL"), "\(r)")
  }

  @Test("audit --sandbox (live and openshell-replay) includes the sandbox's certificate and SSH session records, no other sandbox's")
  func sandboxFilterFollowsTheEventsReference() async throws {
    let env = try CLIEnv("audsb")
    defer { env.cleanup() }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "audsb", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["gateway", "destroy", "--name", "audsb", "--yes"]) }
    for name in ["box", "other"] {
      r = try env.run(["sandbox", "create", name])
      try #require(r.code == 0, "\(r)")
      // A command over SSH: CreateSshSession records ssh.session_created (in the ssh_session aggregate).
      r = try env.run(["sandbox", "connect", name, "--", "true"])
      #expect(r.code == 0, "\(r)")
    }
    r = try env.run(["audit", "-o", "jsonl"])
    try #require(r.code == 0, "\(r)")
    let all = try Self.records(r.out)
    func sandboxID(_ name: String) -> String? {
      all.first { $0["type"] == "sandbox.requested" && ($0["summary"] ?? "").hasPrefix("sandbox default/\(name) id ") }
        .flatMap { $0["summary"]?.components(separatedBy: " id ").last?.components(separatedBy: " ").first }
    }
    let box = try #require(sandboxID("box"))
    let other = try #require(sandboxID("other"))
    // What the filter must find: every record naming the sandbox, whatever aggregate it is in.
    let expected = all.filter { ($0["aggregate"] ?? "").hasSuffix(box) || ($0["summary"] ?? "").contains("sandbox \(box)") }.compactMap { $0["seq"] }
    let types = Set(all.filter { expected.contains($0["seq"] ?? "") }.compactMap { $0["type"] })
    #expect(types.isSuperset(of: ["sandbox.requested", "certificate.issued", "ssh.session_created"]), "\(types)")

    // Point in time: the sandbox and its policy as they were when it was requested, and before it existed.
    let requested = try #require(all.first { $0["type"] == "sandbox.requested" && ($0["summary"] ?? "").contains(box) }?["seq"])
    r = try env.run(["sandbox", "get", "box", "--at", requested])
    #expect(r.code == 0 && r.out.contains("as of seq \(requested)") && r.out.contains(box), "\(r)")
    // Its creator: the identity the audit trail names as the actor of sandbox.requested.
    let creator = try #require(all.first { $0["seq"] == requested }?["actor"])
    #expect(creator.hasPrefix("operator:") && r.out.contains("Created by") && r.out.contains(creator), "\(creator) \(r)")
    let now = try env.run(["sandbox", "get", "box"])
    #expect(now.code == 0 && now.out != r.out, "the past view differs from today's: \(now)")
    r = try env.run(["sandbox", "get", "box", "--at", "1"])
    #expect(r.code != 0 && r.err.contains("box") && r.err.split(separator: "\n").count == 1, "\(r)")
    // No policy was ever set on it: one readable line, not an empty view.
    r = try env.run(["policy", "get", "box", "--at", all.last?["seq"] ?? "0"])
    #expect(r.code != 0 && r.err.contains("no policy revision at that point") && r.err.split(separator: "\n").count == 1, "\(r)")
    r = try env.run(["sandbox", "get", "box", "--at", "not-a-time"])
    #expect(r.code != 0 && r.err.split(separator: "\n").count == 1, "\(r)")

    func check(_ out: String, _ label: String) throws {
      let got = try Self.records(out)
      #expect(Set(got.compactMap { $0["type"] }).isSuperset(of: ["sandbox.requested", "certificate.issued", "ssh.session_created"]), "\(label): \(out)")
      #expect(Set(expected).isSubset(of: Set(got.compactMap { $0["seq"] })), "\(label): every record naming \(box)")
      #expect(!out.contains(other), "\(label): nothing of the other sandbox")
      #expect(got.contains { $0["type"] == "certificate.issued" && $0["aggregate"] == "certificate/sandbox:\(box)" }, "\(label)")
    }
    r = try env.run(["audit", "--sandbox", "box", "-o", "jsonl"])
    #expect(r.code == 0, "\(r)")
    try check(r.out, "openshell audit")
    // By id as well, and offline on the data dir after a stop.
    r = try env.run(["audit", "--sandbox", box, "-o", "jsonl"])
    try check(r.out, "openshell audit by id")
    r = try env.run(["gateway", "stop", "--name", "audsb"])
    #expect(r.code == 0, "\(r)")
    r = try env.replay(["audit", env.dataDir("audsb").appendingPathComponent("log").path, "--sandbox", "box", "-o", "jsonl"])
    #expect(r.code == 0, "\(r)")
    try check(r.out, "openshell-replay audit")
  }

  @Test("a supervisor's sessions are in the sandbox's trail: connect then disconnect with its duration, live and offline")
  func supervisorSessions() async throws {
    let env = try CLIEnv("audsv")
    defer { env.cleanup() }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "audsv", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["gateway", "destroy", "--name", "audsv", "--yes"]) }
    r = try env.run(["sandbox", "create", "box"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "exec", "box", "--", "true"])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "stop", "box"])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "start", "box"])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "delete", "box"])
    #expect(r.code == 0, "\(r)")

    func check(_ out: String, _ label: String) throws {
      let got = try AuditCLITests.records(out).filter { ($0["type"] ?? "").hasPrefix("supervisor.") }
      func session(_ summary: String) -> String {
        summary.components(separatedBy: "session ").dropFirst().first?.components(separatedBy: CharacterSet(charactersIn: ", ")).first ?? "?"
      }
      // Two sessions (before the stop, after the start): each a connect, then its disconnect with a duration.
      let connects = got.filter { $0["type"] == "supervisor.connected" }
      let disconnects = got.filter { $0["type"] == "supervisor.disconnected" }
      #expect(connects.count == 2 && disconnects.count == 2, "\(label): \(out)")
      #expect(got.first?["type"] == "supervisor.connected" && got.last?["type"] == "supervisor.disconnected", "\(label)")
      // Why they ended: the stop, then the delete.
      let reasons = disconnects.map { $0["summary"] ?? "" }
      #expect(reasons.first?.contains(" ms: sandbox stopp") == true && reasons.last?.contains(" ms: sandbox deleting") == true, "\(label): \(reasons)")
      for c in connects {
        let id = session(c["summary"] ?? "")
        #expect((c["summary"] ?? "").contains("as sandbox:") && (c["summary"] ?? "").contains("from ipv"), "\(label): \(c)")
        let d = try #require(disconnects.first { session($0["summary"] ?? "") == id }, "\(label): the end of session \(id)")
        let (cs, ds) = (UInt64(c["seq"] ?? "") ?? 0, UInt64(d["seq"] ?? "") ?? 0)
        #expect(cs < ds, "\(label): connect before disconnect")
        let summary = d["summary"] ?? ""
        let ms = Int(summary.components(separatedBy: " after ").last?.components(separatedBy: " ms").first ?? "") ?? 0
        #expect(ms > 0, "\(label): duration > 0: \(summary)")
      }
    }
    r = try env.run(["audit", "--sandbox", "box", "-o", "jsonl"])
    #expect(r.code == 0, "\(r)")
    try check(r.out, "openshell audit")
    r = try env.run(["audit", "--sandbox", "box"])
    #expect(r.code == 0 && r.out.contains("supervisor.connected") && r.out.contains("supervisor.disconnected"), "table: \(r)")
    // `box` is deleted, yet its history stays auditable (above); a name the log never held is NOT_FOUND.
    r = try env.run(["audit", "--sandbox", "never-was"])
    #expect(r.code != 0 && r.err.contains("sandbox \"never-was\" not found") && r.err.split(separator: "\n").count == 1, "\(r)")
    r = try env.run(["audit", "--type", "supervisor.", "-o", "ocsf"])
    #expect(r.code == 0 && r.out.contains("\"class_uid\":3002") && r.out.contains("ConnectSupervisor"), "\(r)")
    try expectValidOCSF(env, r.out, "supervisor")
    r = try env.run(["gateway", "stop", "--name", "audsv"])
    #expect(r.code == 0, "\(r)")
    r = try env.replay(["audit", env.dataDir("audsv").appendingPathComponent("log").path, "--sandbox", "box", "-o", "jsonl"])
    #expect(r.code == 0, "\(r)")
    try check(r.out, "openshell-replay audit")
  }

  @Test(
    "clients refused in the TLS handshake are in openshell audit (table, json, ocsf), aggregated per reason: 31 forged subjects more are the same record"
  )
  func handshakeRefusals() async throws {
    let env = try CLIEnv("audtls")
    defer { env.cleanup() }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "audtls", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["gateway", "destroy", "--name", "audtls", "--yes"]) }
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    let ca = env.dataDir("audtls").appendingPathComponent("pki/ca.crt").path
    // 50 clients without a certificate (python3's ssl), then one with a certificate of another CA (openssl s_client).
    r = try env.run([repo + "/Tests/audit-tools/tls_clients.py", "handshake", "127.0.0.1", "\(port)", "50", "--ca", ca], binary: "/usr/bin/python3")
    #expect(r.code == 0 && r.out.contains("\"TLSV13_ALERT_CERTIFICATE_REQUIRED\": 50"), "\(r)")
    let script = """
      set -e
      cd "$0"
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout fca.key -out fca.crt -subj /CN=foreign-ca -days 2 2>/dev/null
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout in.key -out in.csr -subj /CN=intruder 2>/dev/null
      openssl x509 -req -in in.csr -CA fca.crt -CAkey fca.key -CAcreateserial -out in.crt -days 2 2>/dev/null
      openssl s_client -connect 127.0.0.1:$1 -CAfile "$2" -cert in.crt -key in.key -alpn h2 -ign_eof </dev/null 2>&1 || true
      """
    r = try env.run(["-c", script, env.root.path, "\(port)", ca], binary: "/bin/sh")
    #expect(r.out.contains("alert unknown ca"), "openssl saw the refusal: \(r)")
    // The same client forging a new subject per handshake (one 10 KB long with control characters, 30 plain ones):
    // still that one record, which counts them.
    let forged = env.root.appendingPathComponent("forged").path
    r = try env.run([repo + "/Tests/audit-tools/forge_certs.py", forged, "30", "--evil"], binary: "/usr/bin/python3")
    try #require(r.code == 0, "\(r)")
    r = try env.run(
      [repo + "/Tests/audit-tools/tls_clients.py", "handshake", "127.0.0.1", "\(port)", "31", "--ca", ca, "--cert-list", forged + "/certs.txt"],
      binary: "/usr/bin/python3")
    #expect(r.code == 0 && r.out.contains("\"TLSV1_ALERT_UNKNOWN_CA\": 31"), "\(r)")
    // The 10 s window closes on its own: wait for both records.
    var lines: [[String: String]] = []
    for _ in 0..<60 {
      r = try env.run(["audit", "--type", "audit.access_refused", "-o", "jsonl"])
      lines = try Self.records(r.out)
      if lines.count >= 2 { break }
      try await Task.sleep(for: .milliseconds(500))
    }
    let summaries = lines.map { $0["summary"] ?? "" }
    #expect(lines.count == 2, "\(summaries)")
    #expect(
      summaries.contains { $0.hasPrefix("refused 50× tls-handshake for unauthenticated from ipv4:127.0.0.1:") && $0.hasSuffix("no client certificate") },
      "\(summaries)")
    #expect(
      summaries.contains {
        $0.contains("32× tls-handshake for unverified from ipv4:127.0.0.1:")
          && $0.hasSuffix("not issued by the gateway CA; claimed subject \"CN=intruder\" (32 distinct subjects)")
      }, "\(summaries)")
    r = try env.run(["audit", "--type", "audit.access_refused"])
    #expect(r.code == 0 && r.out.contains("tls-handshake") && r.out.contains("no client certificate"), "table: \(r)")
    #expect(r.out.split(separator: "\n").count == 3 && r.out.contains("(32 distinct subjects)") && !r.out.contains("\u{1B}"), "table: \(r)")
    r = try env.run(["audit", "--type", "audit.access_refused", "-o", "json"])
    #expect(r.code == 0 && r.out.contains("tls-handshake") && r.out.contains("not issued by the gateway CA"), "json: \(r)")
    #expect(r.out.contains("claimed subject \\\"CN=intruder\\\" (32 distinct subjects)") && r.out.utf8.count < 4096, "json: \(r)")
    r = try env.run(["audit", "--type", "audit.access_refused", "-o", "ocsf"])
    #expect(r.code == 0 && r.out.contains("\"class_uid\":3002") && r.out.contains("\"count\":50"), "ocsf: \(r)")
    #expect(
      r.out.contains("\"claimed_subject\":\"CN=intruder\"") && r.out.contains("\"distinct_subjects\":32") && r.out.contains("\"count\":32"),
      "ocsf: \(r)")
    try expectValidOCSF(env, r.out, "handshake")
  }

  /// The JSON lines of `-o jsonl` as string fields (seq as text).
  static func records(_ jsonl: String) throws -> [[String: String]] {
    try jsonl.split(separator: "\n").map { line in
      let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
      return object.mapValues { "\($0)" }
    }
  }

  /// Validates OCSF lines with Tests/audit-tools/validate_ocsf.py (the venv scripts/setup.sh makes).
  func expectValidOCSF(_ env: CLIEnv, _ lines: String, _ label: String) throws {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    let file = env.root.appendingPathComponent("\(label).ocsf.jsonl").path
    try lines.write(toFile: file, atomically: true, encoding: .utf8)
    let v = try env.run([repo + "/Tests/audit-tools/validate_ocsf.py", file], binary: repo + "/.build-venv-audit/bin/python")
    #expect(v.code == 0 && v.out.contains(" 0 invalid"), "\(label): \(v)")
  }
}
