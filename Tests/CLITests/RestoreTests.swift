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
    #expect(r.out.contains("signatures not checked: no --public-key given"), "verify without a key says what it did not check: \(r)")
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

  /// A restore that was killed midway leaves its staging log and exported archive in the data dir; the next
  /// restore removes them (their process is gone) and leaves those of a live process alone.
  @Test func restoreRemovesWhatAKilledRestoreLeft() throws {
    let env = try CLIEnv("restore-stale")
    defer { env.cleanup() }
    let fm = FileManager.default
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let archive = env.root.appendingPathComponent("archived")
    try fm.createDirectory(at: archive, withIntermediateDirectories: true)
    try fm.copyItem(at: repo.appendingPathComponent("Fixtures/sandbox-lifecycle/log"), to: archive.appendingPathComponent("log"))
    // A pid that existed and is gone: a process that already exited.
    let gone = Process()
    gone.executableURL = URL(fileURLWithPath: "/bin/true")
    try gone.run()
    gone.waitUntilExit()
    let dead = gone.processIdentifier
    let data = env.dataDir("stale")
    try fm.createDirectory(at: data.appendingPathComponent("log.restore-\(dead)"), withIntermediateDirectories: true)
    try Data("partial".utf8).write(to: data.appendingPathComponent("log.restore-\(dead)/data.mdb"))
    try Data("partial".utf8).write(to: data.appendingPathComponent(".restore-\(dead).archive"))
    // pid 1 is always alive: its entry belongs to a restore that may still be running.
    try fm.createDirectory(at: data.appendingPathComponent("log.restore-1"), withIntermediateDirectories: true)

    let r = try env.replay(["restore", archive.path, "--gateway", "stale"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("removed log.restore-\(dead), left by a restore that was killed"), "\(r)")
    #expect(!fm.fileExists(atPath: data.appendingPathComponent("log.restore-\(dead)").path))
    #expect(!fm.fileExists(atPath: data.appendingPathComponent(".restore-\(dead).archive").path))
    #expect(fm.fileExists(atPath: data.appendingPathComponent("log.restore-1").path), "a live process's staging is kept")
    #expect(try env.replay(["verify", data.appendingPathComponent("log").path]).code == 0)
  }
}
