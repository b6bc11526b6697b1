import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Issue 17: `gateway start` reports the failure of this start, never an earlier start's `error:` line
/// from the same daemon log.
@Suite("gateway start reports this start's failure", .serialized, .timeLimit(.minutes(5)))
struct StartErrorTests {
  @Test("a start that dies without an error line does not repeat the previous start's error")
  func earlierErrorsAreNotRepeated() async throws {
    let env = try CLIEnv("starterr")
    defer { env.cleanup() }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "se", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["gateway", "stop", "--name", "se"])
    try #require(r.code == 0, "\(r)")
    let dir = env.dataDir("se")
    let mdb = dir.appendingPathComponent("log/data.mdb")
    let saved = try Data(contentsOf: mdb)

    // Start 1 fails with an `error:` line: its log was emptied.
    try Data().write(to: mdb)
    r = try env.run(["gateway", "start", "--name", "se", "--port", "\(port)"])
    #expect(r.code != 0, "\(r)")
    #expect(r.err.contains("data.mdb"), "the empty log is named: \(r)")

    // Start 2 (log restored) is killed with SIGKILL as soon as its daemon exists (the CLI writes the pid
    // file right after spawning it): it writes no `error:` line, and the report must not be start 1's.
    try saved.write(to: mdb)
    let pidFile = dir.appendingPathComponent("gateway.pid")
    try? FileManager.default.removeItem(at: pidFile)
    let cli = Task.detached { try env.run(["gateway", "start", "--name", "se", "--port", "\(port)"]) }
    var daemon: Int32?
    for _ in 0..<4000 where daemon == nil {
      if let text = try? String(contentsOf: pidFile, encoding: .utf8),
        let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0
      {
        daemon = pid
        kill(pid, SIGKILL)
      } else {
        usleep(2_000)
      }
    }
    try #require(daemon != nil, "the daemon of start 2 did not appear")
    r = try await cli.value
    #expect(r.code != 0, "\(r)")
    #expect(r.err.contains("during start-up"), "\(r)")
    #expect(!r.err.contains("data.mdb"), "start 1's error was reported for start 2: \(r)")
    #expect(r.err.split(separator: "\n").count == 1, "\(r)")

    // The gateway starts normally afterwards.
    r = try env.run(["gateway", "start", "--name", "se", "--port", "\(port)"])
    #expect(r.code == 0, "\(r)")
    _ = try env.run(["gateway", "stop", "--name", "se"])
  }
}
