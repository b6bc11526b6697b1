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
}
