import Foundation
import Testing

/// `openshell audit` and `audit verify` when the gateway cannot be reached: one error line that also names
/// the offline tool (`openshell-replay audit|verify` on the gateway's log), with the command's own filters.
@Suite("CLI audit offline hint", .serialized, .timeLimit(.minutes(10)))
struct AuditOfflineHintTests {
  @Test("a stopped local gateway: the error names openshell-replay on its log dir, and that command works")
  func stoppedLocalGateway() throws {
    let env = try CLIEnv("audoff")
    defer { env.cleanup() }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "audoff", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["gateway", "destroy", "--name", "audoff", "--yes"]) }
    r = try env.run(["provider", "create", "--name", "p1", "--type", "generic", "--credential", "TOKEN=v1"])
    try #require(r.code == 0, "\(r)")
    let keyCopy = env.root.appendingPathComponent("checkpoint.pub.pem").path
    try FileManager.default.copyItem(atPath: env.dataDir("audoff").appendingPathComponent("keys/audit-checkpoint.pub.pem").path, toPath: keyCopy)
    r = try env.run(["gateway", "stop", "--name", "audoff"])
    try #require(r.code == 0, "\(r)")

    let log = env.dataDir("audoff").appendingPathComponent("log").path
    let unreachable =
      "error: cannot reach gateway 'audoff' at https://127.0.0.1:\(port): connection refused; "
      + "is it running? start it with: openshell gateway start --name audoff; "
    r = try env.run(["audit", "--type", "provider.", "--since", "1h", "-o", "jsonl", "--follow"])
    #expect(r.code == 1, "\(r)")
    // --follow has no offline counterpart; the filters and the output are carried over.
    #expect(r.err == unreachable + "or read its log offline: openshell-replay audit \(log) --type provider. --since 1h -o jsonl\n", "\(r)")
    #expect(r.err.split(separator: "\n").count == 1, "one line: \(r)")
    // The named command reads the same trail without the gateway.
    r = try env.replay(["audit", log, "--type", "provider.", "--since", "1h", "-o", "jsonl"])
    #expect(r.code == 0, "\(r)")
    let lines = r.out.split(separator: "\n")
    #expect(lines.count == 1 && lines[0].contains("\"type\":\"provider.created\"") && lines[0].contains("p1"), "\(r)")

    // A value that needs quoting is quoted for the shell.
    r = try env.run(["audit", "--actor", "it's me"])
    #expect(r.err == unreachable + "or read its log offline: openshell-replay audit \(log) --actor 'it'\\''s me'\n", "\(r)")

    r = try env.run(["audit", "verify", "--public-key", keyCopy])
    #expect(r.code == 1, "\(r)")
    #expect(r.err == unreachable + "or read its log offline: openshell-replay verify \(log) --public-key \(keyCopy)\n", "\(r)")
    r = try env.replay(["verify", log, "--public-key", keyCopy])
    #expect(r.code == 0 && r.out.hasPrefix("OK: ") && r.out.contains("checkpoint(s) verified"), "\(r)")
  }

  @Test("an unreachable remote gateway: the offline command runs on its host, DATA/log a placeholder")
  func unreachableRemoteGateway() throws {
    let env = try CLIEnv("audrem")
    defer { env.cleanup() }
    let port = freePort()  // nothing listens on it
    let dir = env.registryDir("far")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let meta: [String: Any] = [
      "name": "far", "gateway_endpoint": "http://127.0.0.1:\(port)", "is_remote": true, "gateway_port": port,
      "auth_mode": "plaintext", "type": "remote",
    ]
    try JSONSerialization.data(withJSONObject: meta).write(to: dir.appendingPathComponent("metadata.json"))
    let r = try env.run(["audit", "-g", "far", "--sandbox", "sb"])
    #expect(r.code == 1, "\(r)")
    #expect(
      r.err
        == "error: cannot reach gateway 'far' at http://127.0.0.1:\(port): connection refused; check the endpoint and your network "
        + "(openshell gateway info --name far); or read its log offline on the gateway's host: openshell-replay audit DATA/log --sandbox sb\n",
      "\(r)")
  }
}
