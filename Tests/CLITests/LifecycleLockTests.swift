import Foundation
import SandboxProtocol
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Lifecycle commands of one gateway run one at a time (a flock outside the data dir).
@Suite struct LifecycleLockTests {
  @Test("two concurrent 'gateway start' of one gateway: one starts it, the other finds it running; nothing archived")
  func concurrentStarts() async throws {
    let env = try CLIEnv("race")
    defer {
      _ = try? env.run(["gateway", "stop", "--name", "race"])
      env.cleanup()
    }
    let port = freePort()
    let args = ["gateway", "start", "--name", "race", "--port", "\(port)"]
    async let a = Task.detached { try env.run(args) }.value
    async let b = Task.detached { try env.run(args) }.value
    let results = try await [a, b]
    for r in results { #expect(r.code == 0, "\(r)") }
    #expect(results.filter { $0.out.contains("already running") }.count == 1, "\(results)")
    #expect(results.filter { $0.out.contains("Gateway ready") }.count == 1, "\(results)")
    let archive = env.state.appendingPathComponent("openshell/archive/race").path
    #expect(!FileManager.default.fileExists(atPath: archive), "nothing was archived")
    // The running daemon is the one the pid file names, and it answers.
    let r = try env.run(["status", "-g", "race"])
    #expect(r.code == 0, "\(r)")
    let pid = try #require(
      Int32(String(contentsOf: env.dataDir("race").appendingPathComponent("gateway.pid"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
    let daemons = try FileManager.default.contentsOfDirectory(atPath: "/proc").compactMap(Int32.init).filter { p in
      guard let d = FileManager.default.contents(atPath: "/proc/\(p)/cmdline") else { return false }
      let cmd = String(decoding: d, as: UTF8.self)
      return cmd.contains("serve") && cmd.contains(env.dataDir("race").path)
    }
    #expect(daemons == [pid], "exactly one daemon: \(daemons) vs pid file \(pid)")
  }
}
