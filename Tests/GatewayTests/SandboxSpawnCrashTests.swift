import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import SandboxProtocol
import Testing

@testable import Gateway

#if canImport(Glibc)
  import Glibc
#endif

/// Issue 16: "The local driver can start a sandbox twice … on restart, adopt or clean up, never start a
/// second supervisor. A test kills the gateway between spawn and record." A real `openshell gateway serve`
/// process ends (the test-only crash point `OPENSHELL_TEST_EXIT_AFTER_SPAWN`) right after it spawned a
/// supervisor and before `instance.json` records it; the next gateway on the same data directory ends that
/// unrecorded supervisor and runs exactly one of its own.
@Suite(
  "Gateway killed between spawn and record", .serialized, .timeLimit(.minutes(3)),
  .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/bwrap"), "needs bubblewrap"))
struct SandboxSpawnCrashTests {
  /// The `openshell` binary built next to the test runner (and the supervisor).
  static var openshell: String {
    ((LocalComputeDriver.defaultSupervisorBinary() as NSString).deletingLastPathComponent as NSString).appendingPathComponent("openshell")
  }

  @Test("a gateway killed after spawning a supervisor and before recording it: the restart runs exactly one supervisor")
  func gatewayKilledBetweenSpawnAndRecord() async throws {
    let dir = try GatewayTestSupport.temporaryDirectory("spawncrash")
    let port = freeLoopbackPort()
    let log = dir + "-serve.log"
    var environment = ProcessInfo.processInfo.environment
    environment[LocalComputeDriver.testExitAfterSpawnVariable] = "1"
    let first = try Spawner.spawn(
      Self.openshell, ["gateway", "serve", "--data-dir", dir, "--port", "\(port)"],
      environment: environment, stdout: .appendFile(log), stderr: .appendFile(log))
    var listening = false
    for _ in 0..<600 where !listening {
      listening = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("listening on")
      if !listening { try await Task.sleep(for: .milliseconds(50)) }
    }
    #expect(listening, "the first gateway serves: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")

    // CreateSandbox answers once sandbox.requested is durable; the driver then spawns and the process ends.
    let pki = dir + "/pki"
    let id = try await SandboxGateway.withClient(port: port, ca: pki + "/ca.crt", cert: pki + "/client.crt", key: pki + "/client.key") { c in
      try await c.create("spawn-crash").metadata.id
    }
    var status: Int32?
    for _ in 0..<600 where status == nil {
      status = Spawner.poll(first.pid)
      if status == nil { try await Task.sleep(for: .milliseconds(50)) }
    }
    if status == nil { kill(first.pid, SIGKILL); _ = Spawner.waitBlocking(first.pid) }
    #expect(status == LocalComputeDriver.testExitAfterSpawnStatus, "the gateway ended at the crash point")
    let orphans = SandboxOrphanTests.marked(dir, id)
    #expect(!orphans.isEmpty, "the spawned supervisor outlived the gateway")
    #expect(!FileManager.default.fileExists(atPath: "\(dir)/sandboxes/\(id)/instance.json"), "nothing recorded it")

    let second = try await SandboxGateway.start(dataDirectory: dir, port: port)
    do {
      try await second.withClient { c in
        try await c.wait("spawn-crash", .ready)
        let r = try await c.exec("spawn-crash", ["echo", "one"])
        #expect(r.out == "one\n")
      }
      let now = SandboxOrphanTests.marked(dir, id)
      #expect(now.count == 2, "exactly one instance: its outer bwrap and namespace init (\(now))")
      #expect(Set(now).isDisjoint(with: orphans), "the unrecorded supervisor was ended, not adopted (\(orphans) → \(now))")
      let recorded = second.running.driver?.supervisorPID(id)
      #expect(recorded != nil && !orphans.contains(recorded!), "the running supervisor is the recorded one")
      #expect(FileManager.default.fileExists(atPath: "\(dir)/sandboxes/\(id)/instance.json"))
    } catch {
      Issue.record(error)
    }
    // Deleted and stopped before returning (a deferred stop may not run before the test process exits,
    // which would leave the sandbox's network namespace behind).
    try await second.withClient { c in try await c.deleteAndWait("spawn-crash") }
    await second.stopEverything()
  }
}
