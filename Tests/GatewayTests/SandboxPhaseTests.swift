import EventLog
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import Projections
import Testing

@testable import Gateway

#if canImport(Glibc)
  import Glibc
#endif

/// The main process's exit drives the sandbox's phase (COMPLETED / ERROR), `restart_policy` restarts it
/// (each restart an event, crash loops capped), and a relaunch after a gateway restart is recorded.
@Suite(
  "Sandbox phases after the main process exits (local driver)", .serialized, .timeLimit(.minutes(5)),
  .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/bwrap"), "needs bubblewrap"))
struct SandboxPhaseTests {
  func create(_ c: OSClient, _ name: String, _ command: [String], policy: Openshell_V1_SandboxRestartPolicy = .unspecified) async throws -> String {
    try await c.createSandbox(
      .with {
        $0.name = name
        $0.spec = .with {
          $0.command = command; $0.restartPolicy = policy
        }
        $0.workspaceScope = .with { $0.workspace = "default" }
      }
    ).sandbox.metadata.id
  }

  /// The sandbox's events of `types`, decoded, in log order.
  func events(_ gw: SandboxGateway, _ id: String, _ types: Set<String>) throws -> [GatewayEvent] {
    try gw.running.store.log.records(from: 1, filter: EventFilter(aggregate: .sandbox(id), types: types)).map { try GatewayEvent.decode($0) }
  }

  func ready(_ s: Openshell_V1_Sandbox) -> Openshell_V1_SandboxCondition? { s.status.conditions.first { $0.type == "Ready" } }

  @Test("main process exit 0 → COMPLETED; exit 3 → ERROR naming 3; no main command stays READY; start and delete work")
  func phases() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      let done = try await create(c, "main-true", ["true"])
      _ = try await create(c, "main-fails", ["sh", "-c", "exit 3"])
      _ = try await c.create("no-main")
      let completed = try await c.wait("main-true", .completed)
      #expect(completed.status.exitCode == 0)
      #expect(ready(completed)?.reason == "MainProcessCompleted")
      let failed = try await c.wait("main-fails", .error)
      #expect(failed.status.exitCode == 3)
      #expect(ready(failed)?.reason == "MainProcessExited")
      #expect(ready(failed)?.message.contains("code 3") == true, "\(String(describing: ready(failed)))")
      #expect(failed.status.restartCount == 0)
      try await c.wait("no-main", .ready)
      #expect(try await c.exec("no-main", ["echo", "up"]).out == "up\n")
      // Nothing keeps running for an ended sandbox.
      for _ in 0..<50 where gw.running.driver?.supervisorPID(done) != nil { try await Task.sleep(for: .milliseconds(100)) }
      #expect(gw.running.driver?.supervisorPID(done) == nil)
      // A COMPLETED sandbox can be started again: it runs its main process again and completes again.
      _ = try await c.startSandbox(
        .with {
          $0.name = "main-true"; $0.workspaceScope = .with { $0.workspace = "default" }
        })
      var again = try await c.get("main-true")
      for _ in 0..<300 where !(again.status.phase == .completed && again.status.restartCount == 1) {
        try await Task.sleep(for: .milliseconds(100))
        again = try await c.get("main-true")
      }
      #expect(again.status.phase == .completed && again.status.restartCount == 1, "\(again.status)")
      #expect(try events(gw, done, ["sandbox.main_process_exited"]).count == 2)
      try await c.deleteAndWait("main-true")
      try await c.deleteAndWait("main-fails")
      try await c.deleteAndWait("no-main")
    }
    await gw.stopEverything()
  }

  @Test("restart_policy ON_FAILURE: fails twice, then succeeds → restart_count 2, COMPLETED, each restart an event")
  func onFailure() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      let script = "n=$(cat /sandbox/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /sandbox/count; [ $n -ge 3 ]"
      let id = try await create(c, "on-failure", ["sh", "-c", script], policy: .onFailure)
      var s = try await c.get("on-failure")
      for _ in 0..<600 where s.status.phase != .completed {
        try await Task.sleep(for: .milliseconds(100))
        s = try await c.get("on-failure")
      }
      #expect(s.status.phase == .completed, "\(s.status)")
      #expect(s.status.restartCount == 2)
      #expect(s.status.exitCode == 0)
      let restarted = try events(gw, id, ["sandbox.condition_set"]).compactMap { e -> String? in
        guard case .sandboxConditionSet(let x) = e.kind, x.type == "Restarted" else { return nil }
        return x.message
      }
      #expect(restarted.count == 2, "\(restarted)")
      #expect(restarted.first?.contains("exited with code 1 (restart_policy ON_FAILURE)") == true, "\(restarted)")
      #expect(try events(gw, id, ["sandbox.starting"]).count == 2)
      #expect(try events(gw, id, ["sandbox.main_process_exited"]).count == 3)
      // ON_FAILURE does not restart after success: it stays COMPLETED.
      try await Task.sleep(for: .seconds(1))
      #expect(try await c.get("on-failure").status.phase == .completed)
      try await c.deleteAndWait("on-failure")
    }
    await gw.stopEverything()
  }

  @Test("a crash loop is capped: at most 5 restarts a minute, then ERROR RestartLimit")
  func crashLoopCapped() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      let id = try await create(c, "crash-loop", ["sh", "-c", "exit 1"], policy: .always)
      var s = try await c.get("crash-loop")
      for _ in 0..<900 where ready(s)?.reason != "RestartLimit" {
        try await Task.sleep(for: .milliseconds(100))
        s = try await c.get("crash-loop")
      }
      #expect(s.status.phase == .error)
      #expect(ready(s)?.reason == "RestartLimit")
      #expect(ready(s)?.message.contains("restarting too often") == true, "\(String(describing: ready(s)))")
      #expect(s.status.restartCount == UInt32(MainProcessRestart.limit))
      // It stays there: no further restarts.
      try await Task.sleep(for: .seconds(2))
      #expect(try events(gw, id, ["sandbox.starting"]).count == MainProcessRestart.limit)
      #expect(try await c.get("crash-loop").status.phase == .error)
      try await c.deleteAndWait("crash-loop")
    }
    await gw.stopEverything()
  }

  @Test(
    "a main process killed by the OOM killer: ERROR, Ready reason OOMKilled naming the limit",
    .enabled(if: SandboxCgroups.detect() != nil, "needs a writable cgroup hierarchy"))
  func outOfMemory() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.createSandbox(
        .with {
          $0.name = "oom-main"
          $0.spec.command = ["sh", "-c", "sleep 1; x=$(yes a | head -c 200000000); echo survived ${#x}"]
          $0.spec.template.resources.fields = ["memory": .init(stringValue: "64Mi")]
          $0.workspaceScope = .with { $0.workspace = "default" }
        })
      let s = try await c.wait("oom-main", .error, timeout: .seconds(60))
      #expect(s.status.exitCode == 137)
      #expect(ready(s)?.reason == "OOMKilled")
      #expect(ready(s)?.message == "the main process exited with code 137: killed: out of memory (limit 64Mi)", "\(String(describing: ready(s)))")
      try await c.deleteAndWait("oom-main")
    }
    await gw.stopEverything()
  }

  @Test("a sandbox whose processes died while the gateway was down is relaunched with a Relaunched condition event")
  func relaunchRecorded() async throws {
    let first = try await SandboxGateway.start()
    let dir = first.dataDirectory
    let id = try await first.withClient { c in
      let id = try await c.create("relaunch").metadata.id
      try await c.wait("relaunch", .ready)
      return id
    }
    await first.stop()
    // The sandbox's processes end while no gateway runs.
    let instanceData = try #require(FileManager.default.contents(atPath: "\(dir)/sandboxes/\(id)/instance.json"))
    let instance = try JSONDecoder().decode(SandboxInstance.self, from: instanceData)
    if let nsInit = HostProcess.liveNamespaceInit(infoFile: "\(dir)/sandboxes/\(id)/bwrap-info.json") { kill(nsInit, SIGKILL) }
    kill(instance.pid, SIGKILL)
    for _ in 0..<100 where HostProcess.exitStatus(instance) == nil { try await Task.sleep(for: .milliseconds(20)) }
    #expect(HostProcess.exitStatus(instance) != nil)

    let second = try await SandboxGateway.start(dataDirectory: dir, port: first.port)
    defer { Task { await second.stopEverything() } }
    try await second.withClient { c in
      var result: Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>.ExecResult?
      for _ in 0..<150 {
        if let r = try? await c.exec("relaunch", ["echo", "back"]) { result = r; break }
        try await Task.sleep(for: .milliseconds(100))
      }
      #expect(result?.out == "back\n")
      let s = try await c.get("relaunch")
      #expect(s.status.phase == .ready)
      let relaunched = s.status.conditions.first { $0.type == "Relaunched" }
      #expect(relaunched?.reason == "ProcessesEnded")
      #expect(relaunched?.message.contains("ended while the gateway was down") == true)
      let recorded = try events(second, id, ["sandbox.condition_set"]).contains { e in
        if case .sandboxConditionSet(let x) = e.kind { return x.type == "Relaunched" }
        return false
      }
      #expect(recorded)
      try await c.deleteAndWait("relaunch")
    }
    await second.stopEverything()
  }
}

/// ``MainProcessRestart/decide(_:nowNs:)`` (pure): the policy table and the crash-loop window.
@Suite struct MainProcessRestartDecisionTests {
  func record(_ policy: Openshell_V1_SandboxRestartPolicy, exit: Int32, starts: [UInt64] = []) -> SandboxRecord {
    let spec =
      (try? Openshell_V1_SandboxSpec.with {
        $0.command = ["x"]; $0.restartPolicy = policy
      }.serializedData()) ?? Data()
    let reason = exit == 0 ? SandboxRecord.mainProcessCompleted : SandboxRecord.mainProcessFailed
    // SandboxRecord's memberwise initializer is internal to Projections: build it from its Codable form.
    let json: [String: Any] = [
      "id": "s", "name": "s", "workspace": "default", "labels": [String: String](), "annotations": [String: String](),
      "spec": spec.base64EncodedString(), "templateName": "", "templateVersion": 0, "serviceExposures": [Any](),
      "providers": [String](), "phase": (exit == 0 ? SandboxPhase.completed : .error).rawValue,
      "conditions": [["type": "Ready", "status": "False", "reason": reason, "message": "", "transitionNs": 0]],
      "createdNs": 0, "resourceVersion": 1, "exitCode": exit, "restartCount": starts.count, "recentStartsNs": starts,
      "hostKeyFingerprint": "", "driver": "local", "createdBy": "",
    ]
    let data = (try? JSONSerialization.data(withJSONObject: json)) ?? Data()
    return try! JSONDecoder().decode(SandboxRecord.self, from: data)
  }

  @Test func policyTable() {
    let now: UInt64 = 1_000 * 1_000_000_000
    #expect(MainProcessRestart.decide(record(.unspecified, exit: 3), nowNs: now) == .none)
    #expect(MainProcessRestart.decide(record(.never, exit: 3), nowNs: now) == .none)
    #expect(MainProcessRestart.decide(record(.onFailure, exit: 0), nowNs: now) == .none)
    #expect(
      MainProcessRestart.decide(record(.onFailure, exit: 3), nowNs: now)
        == .restart(message: "restart 1: the main process exited with code 3 (restart_policy ON_FAILURE)"))
    #expect(
      MainProcessRestart.decide(record(.always, exit: 0), nowNs: now)
        == .restart(message: "restart 1: the main process exited with code 0 (restart_policy ALWAYS)"))
  }

  @Test func crashLoopWindow() {
    let now: UInt64 = 1_000 * 1_000_000_000
    let second: UInt64 = 1_000_000_000
    let recent = (1...5).map { now - UInt64($0) * second }
    guard case .giveUp(let m) = MainProcessRestart.decide(record(.always, exit: 1, starts: recent), nowNs: now) else {
      Issue.record("5 starts within a minute must stop the restarts")
      return
    }
    #expect(m.hasPrefix("restarting too often: 5 starts within 60 s"))
    // Four recent starts and one older than the window: still restarted.
    let older = Array(recent.prefix(4)) + [now - 61 * second]
    #expect(
      MainProcessRestart.decide(record(.always, exit: 1, starts: older), nowNs: now)
        == .restart(message: "restart 6: the main process exited with code 1 (restart_policy ALWAYS)"))
  }
}
