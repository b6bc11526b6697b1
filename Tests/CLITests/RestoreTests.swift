import Foundation
import Testing

/// `openshell-replay restore` marks sandboxes whose processes cannot have survived, never drops them.
@Suite struct RestoreTests {
  @Test func restoreMarksUnresumableSandboxes() throws {
    let env = try CLIEnv("restore")
    defer { env.cleanup() }
    // A real fixture log (generated from Sources/Scenarios): one READY sandbox (default/happy-otter)
    // and one already failed (research/broken-lynx).
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let archive = env.root.appendingPathComponent("archived")
    try FileManager.default.createDirectory(at: archive, withIntermediateDirectories: true)
    try FileManager.default.copyItem(at: repo.appendingPathComponent("Fixtures/sandbox-lifecycle/log"), to: archive.appendingPathComponent("log"))

    var r = try env.replay(["restore", archive.path, "--gateway", "rebuilt"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("sandbox default/happy-otter: marked failed (NotResumedAfterRestore)"), "\(r)")
    #expect(!r.out.contains("broken-lynx: marked"), "an already failed sandbox is left as it was")

    let log = env.dataDir("rebuilt").appendingPathComponent("log").path
    r = try env.replay(["verify", log])
    #expect(r.code == 0, "\(r)")
    r = try env.replay(["audit", log, "--sandbox", "happy-otter", "--type", "sandbox.failed", "-o", "jsonl"])
    #expect(r.code == 0, "\(r)")
    let lines = r.out.split(separator: "\n")
    #expect(lines.count == 1, "\(r)")
    #expect(lines.first?.contains("NotResumedAfterRestore") == true)
    // Nothing was dropped: both sandboxes are still in the restored state.
    r = try env.replay(["state", log])
    #expect(r.out.contains("\"happy-otter\"") && r.out.contains("\"broken-lynx\""), "\(r)")
    #expect(r.out.contains("NotResumedAfterRestore"))
  }

  /// A restore over a gateway with other sandboxes names the ones it drops, records itself as an event,
  /// and the restored gateway records the certificates it actually uses at its next start (issue 16).
  @Test func restoreNamesDroppedSandboxesAndRecordsItselfAndThePKI() throws {
    let env = try CLIEnv("restore-drop")
    defer { env.cleanup() }
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    func archived(_ fixture: String) throws -> URL {
      let dir = env.root.appendingPathComponent("archived-\(fixture)")
      try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
      try FileManager.default.copyItem(at: repo.appendingPathComponent("Fixtures/\(fixture)/log"), to: dir.appendingPathComponent("log"))
      return dir
    }
    var r = try env.replay(["restore", try archived("sandbox-lifecycle").path, "--gateway", "again"])
    try #require(r.code == 0, "\(r)")
    #expect(!r.out.contains("dropped"), "nothing to drop into an empty gateway: \(r)")
    r = try env.replay(["restore", try archived("inference-routes").path, "--gateway", "again"])
    try #require(r.code == 0, "\(r)")
    #expect(r.out.contains("sandbox default/happy-otter: dropped"), "\(r)")
    #expect(r.out.contains("sandbox research/broken-lynx: dropped"), "\(r)")
    let log = env.dataDir("again").appendingPathComponent("log").path
    r = try env.replay(["audit", log, "--type", "gateway.restored", "-o", "jsonl"])
    #expect(r.code == 0 && r.out.split(separator: "\n").count == 1, "\(r)")
    #expect(r.out.contains("restored as gateway again") && r.out.contains("happy-otter"), "\(r)")

    // The next start records the PKI in use (the restored log never saw it) and the name.
    r = try env.run(["gateway", "start", "--name", "again", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["gateway", "stop", "--name", "again"])
    #expect(r.code == 0, "\(r)")
    let client = env.dataDir("again").appendingPathComponent("pki/client.crt").path
    let fingerprint = try env.run(["-c", "openssl x509 -in '\(client)' -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr A-F a-f"], binary: "/bin/sh")
    r = try env.replay(["state", log])
    #expect(r.code == 0, "\(r)")
    let fp = fingerprint.out.trimmingCharacters(in: .whitespacesAndNewlines)
    #expect(fp.count == 64 && r.out.contains(fp), "the operator certificate in use is recorded: \(fp)")
    #expect(r.out.contains("\"name\" : \"again\"") || r.out.contains("\"name\": \"again\""), "the gateway's name after the restore")
  }
}
