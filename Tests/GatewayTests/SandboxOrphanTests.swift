import Foundation
import GRPCCore
import OpenShellAPI
import SandboxProtocol
import Testing

@testable import Gateway

#if canImport(Glibc)
  import Glibc
#endif

/// Issue 17: "No sandbox process may outlive the gateway's knowledge of it." A start that fails after
/// bubblewrap forked (here: its `--info-fd` file cannot be written, as on a full disk) leaves nothing
/// running, and processes of sandbox starts a previous gateway run lost track of are ended at start-up.
@Suite(
  "Sandbox orphans (local driver)", .serialized, .timeLimit(.minutes(3)),
  .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/bwrap"), "needs bubblewrap"))
struct SandboxOrphanTests {
  /// Host processes whose command line carries sandbox `id`'s workspace under `dataDirectory`.
  static func marked(_ dataDirectory: String, _ id: String) -> [Int32] {
    hostProcesses(containing: "\0\(dataDirectory)/sandboxes/\(id)/workspace\0")
  }

  static func waitGone(_ dataDirectory: String, _ id: String, within: Duration = .seconds(5)) async throws -> [Int32] {
    let deadline = ContinuousClock.now + within
    while ContinuousClock.now < deadline, !marked(dataDirectory, id).isEmpty { try await Task.sleep(for: .milliseconds(100)) }
    return marked(dataDirectory, id)
  }

  @Test("bubblewrap cannot write its info file (ENOSPC): the sandbox turns ERROR and no process of it is left")
  func failedStartLeavesNothing() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      let s = try await c.create("orphan-start")
      try await c.wait("orphan-start", .ready)
      _ = try await c.stopSandbox(.with { $0.name = "orphan-start" })
      try await c.wait("orphan-start", .stopped)
      #expect(Self.marked(gw.dataDirectory, s.metadata.id) == [], "nothing runs once stopped")
      // The next start's bwrap writes its info file to /dev/full: every write fails with ENOSPC.
      let info = gw.dataDirectory + "/sandboxes/\(s.metadata.id)/bwrap-info.json"
      try? FileManager.default.removeItem(atPath: info)
      try FileManager.default.createSymbolicLink(atPath: info, withDestinationPath: "/dev/full")
      _ = try await c.startSandbox(.with { $0.name = "orphan-start" })
      let failed = try await c.wait("orphan-start", .error, timeout: .seconds(15))
      #expect(failed.status.conditions.first { $0.type == "Ready" }?.reason == "SupervisorExited")
      // bwrap's namespace child blocked forever waiting for its dead parent before the fix.
      let left = try await Self.waitGone(gw.dataDirectory, s.metadata.id)
      #expect(left == [], "processes of the failed start still run: \(left)")
      try FileManager.default.removeItem(atPath: info)
      try await c.deleteAndWait("orphan-start")
    }
    await gw.stopEverything()
  }

  @Test("start-up ends stray processes of unknown and known sandboxes, and keeps the live instance")
  func straysReapedAtStartup() async throws {
    let first = try await SandboxGateway.start()
    let dir = first.dataDirectory
    let port = first.port
    let id = try await first.withClient { c in
      let s = try await c.create("stray-keep")
      try await c.wait("stray-keep", .ready)
      return s.metadata.id
    }
    let supervisor = try #require(first.running.driver?.supervisorPID(id))
    await first.stop()
    // What a failed start leaves: bwrap's namespace child, blocked after its parent could not write the
    // info file. One for a sandbox the log never knew, one for the live sandbox (a second, lost start).
    let unknown = "00000000-0000-4000-8000-0000000000aa"
    func stray(_ sandbox: String) throws {
      let p = try Spawner.spawn(
        "/usr/bin/bwrap",
        ["--unshare-pid", "--ro-bind", "/", "/", "--bind", "\(dir)/sandboxes/\(sandbox)/workspace", "/sandbox", "--info-fd", "3", "--", "/bin/sleep", "300"],
        environment: [:], newSession: true, fd3File: "/dev/full")
      _ = Spawner.waitBlocking(p.pid)
    }
    try stray(unknown)
    try stray(id)
    let knownBefore = Self.marked(dir, id)
    #expect(Self.marked(dir, unknown).count == 1, "the stray runs before the restart")
    #expect(knownBefore.count == 3, "outer bwrap, namespace init and the stray: \(knownBefore)")

    let second = try await SandboxGateway.start(dataDirectory: dir, port: port)
    defer { Task { await second.stopEverything() } }
    #expect(try await Self.waitGone(dir, unknown) == [])
    let deadline = ContinuousClock.now + .seconds(5)
    while ContinuousClock.now < deadline, Self.marked(dir, id).count > 2 { try await Task.sleep(for: .milliseconds(100)) }
    #expect(Self.marked(dir, id).count == 2, "only the live instance's outer bwrap and namespace init remain")
    try await second.withClient { c in
      var out = ""
      for _ in 0..<50 {
        if let r = try? await c.exec("stray-keep", ["echo", "kept"]) { out = r.out; break }
        try await Task.sleep(for: .milliseconds(100))
      }
      #expect(out == "kept\n")
      #expect(second.running.driver?.supervisorPID(id) == supervisor, "the live supervisor was not touched")
      try await c.deleteAndWait("stray-keep")
    }
    await second.stopEverything()
  }
}
