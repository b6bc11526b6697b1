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
    r = try env.run(["audit", "--since", "yesterday"])
    #expect(r.code != 0 && r.err.contains("--since"), "\(r)")

    // The start-up checkpoint already vouches for the log.
    r = try env.run(["audit", "verify", "--public-key", keyCopy])
    #expect(r.code == 0 && r.out.hasPrefix("OK: "), "\(r)")
    let stranger = env.root.appendingPathComponent("stranger.pem").path
    let gen = try env.run(["-c", "openssl genpkey -algorithm ed25519 | openssl pkey -pubout > \(stranger)"], binary: "/bin/sh")
    try #require(gen.code == 0, "\(gen)")
    r = try env.run(["audit", "verify", "--public-key", stranger])
    #expect(r.code != 0 && r.err.contains("no checkpoint") && r.err.contains("by other keys"), "\(r)")
    r = try env.run(["audit", "verify", "--public-key", "/nonexistent.pem"])
    #expect(r.code != 0 && r.err.contains("/nonexistent.pem"), "\(r)")

    // Offline on the live log: the records after the start-up checkpoint are not signed yet, which is also what
    // removing the newest checkpoints would look like: refused unless accepted explicitly.
    let log = env.dataDir("aud").appendingPathComponent("log").path
    r = try env.replay(["verify", log, "--public-key", keyCopy])
    #expect(r.code != 0 && r.out.contains("not covered by a signed checkpoint"), "\(r)")
    r = try env.replay(["verify", log, "--public-key", keyCopy, "--allow-unsigned-tail"])
    #expect(r.code == 0, "\(r)")

    // The same proof offline, from the data dir after a stop (the shutdown checkpoint covers the rest).
    r = try env.run(["gateway", "stop", "--name", "aud"])
    #expect(r.code == 0, "\(r)")
    r = try env.replay(["verify", log, "--public-key", keyCopy])
    #expect(r.code == 0 && r.out.contains("signed: ") && r.out.contains("vouched for by the key"), "\(r)")
    r = try env.replay(["verify", log, "--public-key", stranger])
    #expect(r.code != 0 && r.out.contains("FAILED"), "\(r)")
    // The same OCSF export offline, from the data dir.
    r = try env.replay(["audit", log, "-o", "ocsf"])
    #expect(r.code == 0 && r.out.contains("\"class_uid\":6003") && !r.out.contains("v1\""), "\(r)")
    try expectValidOCSF(env, r.out, "offline")
    r = try env.replay(["audit", log, "-o", "xml"])
    #expect(r.code != 0 && r.err.contains("ocsf"), "\(r)")
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
