import Foundation
import GRPCCore
import OpenShellAPI
import SandboxProtocol
import Testing

@testable import Gateway

#if canImport(Glibc)
  import Glibc
#endif

/// End to end with the local driver: bubblewrap sandboxes, the real `openshell-sandbox` supervisor
/// (built next to the test binary), exec, logs, stop/start, failures, restarts, authorization.
@Suite(
  "Sandboxes (local driver)", .serialized, .timeLimit(.minutes(5)),
  .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/bwrap"), "needs bubblewrap"))
struct SandboxLifecycleTests {
  @Test("exec: output streamed as produced, exit code, stdin, env, isolation, timeout → 124")
  func execBehaviour() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      let s = try await c.create("exec-test")
      #expect(s.status.phase == .provisioning)
      try await c.wait("exec-test", .ready)

      let hello = try await c.exec("exec-test", ["echo", "hello"])
      #expect(hello.exitCode == 0)
      #expect(hello.out == "hello\n")

      let bad = try await c.exec("exec-test", ["sh", "-c", "echo oops >&2; exit 3"])
      #expect(bad.exitCode == 3)
      #expect(bad.err == "oops\n")

      let cat = try await c.exec("exec-test", ["cat"], stdin: Data("piped\n".utf8))
      #expect(cat.out == "piped\n")

      let env = try await c.exec("exec-test", ["sh", "-c", "echo $X; pwd; hostname"], env: ["X": "42"])
      #expect(env.out == "42\n/sandbox\nexec-test\n")

      // Isolation: own PID namespace, unprivileged workload user, writable /sandbox, read-only /usr.
      let iso = try await c.exec(
        "exec-test", ["sh", "-c", "id -u; touch /sandbox/f && echo rw; touch /usr/x 2>/dev/null || echo ro; ls /proc | grep -c '^[0-9]'"])
      let lines = iso.out.split(separator: "\n").map(String.init)
      #expect(lines.count == 4)
      if geteuid() == 0 { #expect(lines.first == String(try SandboxUser.resolve().uid)) }
      #expect(lines.dropFirst().prefix(2) == ["rw", "ro"])
      #expect((Int(lines.last ?? "") ?? 99) < 10, "only the sandbox's own processes are visible: \(iso.out)")

      // Streaming: the first chunk arrives long before the exit.
      let streamed = try await c.exec("exec-test", ["sh", "-c", "echo a; sleep 1.5; echo b"])
      #expect(streamed.out == "a\nb\n")
      let firstOut = streamed.events.first { $0.1 == "stdout" }!.0
      let exit = streamed.events.last!.0
      #expect(streamed.events.last!.1 == "exit")
      #expect(exit - firstOut > .milliseconds(1000), "\(streamed.events)")

      // Timeout kills the process tree; exit 124.
      let started = ContinuousClock.now
      let slow = try await c.exec("exec-test", ["sh", "-c", "sleep 30 & sleep 30"], timeout: 1)
      #expect(slow.exitCode == SandboxProtocol.timeoutExitCode)
      #expect(ContinuousClock.now - started < .seconds(5))
      let ps = try await c.exec("exec-test", ["sh", "-c", "ps -e -o comm= 2>/dev/null | grep -c sleep || true"])
      #expect(ps.out.trimmingCharacters(in: .whitespacesAndNewlines) == "0")

      try await c.deleteAndWait("exec-test")
    }
    await gw.stopEverything()
  }

  @Test("main process output reaches GetSandboxLogs; its exit code is reported and ends the sandbox (ERROR)")
  func logsAndMainProcess() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.create("logs-test", command: ["sh", "-c", "echo from-main; echo to-stderr >&2; exit 7"])
      let ended = try await c.wait("logs-test", .error)
      #expect(ended.status.conditions.first { $0.type == "Ready" }?.message == "the main process exited with code 7")
      var messages: [String] = []
      var exitCode: Int32?
      for _ in 0..<100 {
        let r = try await c.getSandboxLogs(
          .with {
            $0.sandbox = "logs-test"; $0.workspaceScope = .with { $0.workspace = "default" }
          })
        messages = r.logs.map(\.message)
        let s = try await c.get("logs-test")
        exitCode = s.status.hasExitCode ? s.status.exitCode : nil
        if messages.contains("from-main"), messages.contains("to-stderr"), exitCode != nil { break }
        try await Task.sleep(for: .milliseconds(100))
      }
      #expect(messages.contains("from-main"))
      #expect(messages.contains("to-stderr"))
      #expect(messages.contains { $0.contains("supervisor started") })
      #expect(exitCode == 7)
      let onlyGateway = try await c.getSandboxLogs(
        .with {
          $0.sandbox = "logs-test"; $0.sources = ["gateway"]
        })
      #expect(!onlyGateway.logs.isEmpty && onlyGateway.logs.allSatisfy { $0.source == "gateway" })
      try await c.deleteAndWait("logs-test")
    }
    await gw.stopEverything()
  }

  @Test("stop → STOPPED (exec refused), start → READY; the workspace survives")
  func stopStart() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.create("stop-test")
      try await c.wait("stop-test", .ready)
      _ = try await c.exec("stop-test", ["sh", "-c", "echo kept > /sandbox/note"])
      // A command that escapes its exec's process group keeps running after the exec (and the supervisor)
      // ended; stopping the sandbox must still end it.
      let marker = "\(Int.random(in: 100_000...999_999))"
      let r0 = try await c.exec("stop-test", ["sh", "-c", "setsid sleep \(marker) </dev/null >/dev/null 2>&1 & echo started"])
      #expect(r0.out == "started\n")
      #expect(!hostProcesses(containing: "sleep\0\(marker)").isEmpty, "the orphan runs before the stop")
      _ = try await c.stopSandbox(.with { $0.name = "stop-test" })
      try await c.wait("stop-test", .stopped)
      #expect(hostProcesses(containing: "sleep\0\(marker)") == [], "no process of the stopped sandbox is left")
      await #expect(throws: RPCError.self) { _ = try await c.exec("stop-test", ["true"]) }
      do { _ = try await c.exec("stop-test", ["true"]) } catch let e as RPCError { #expect(e.code == .failedPrecondition) }
      _ = try await c.startSandbox(.with { $0.name = "stop-test" })
      try await c.wait("stop-test", .ready)
      let r = try await c.exec("stop-test", ["cat", "/sandbox/note"])
      #expect(r.out == "kept\n")
      try await c.deleteAndWait("stop-test")
    }
    await gw.stopEverything()
  }

  @Test("a supervisor killed with SIGKILL turns the sandbox to ERROR with reason SupervisorExited")
  func sigkill() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      let s = try await c.create("kill-test")
      try await c.wait("kill-test", .ready)
      let pid = try #require(gw.running.driver?.supervisorPID(s.metadata.id))
      kill(pid, SIGKILL)
      let failed = try await c.wait("kill-test", .error, timeout: .seconds(10))
      let ready = failed.status.conditions.first { $0.type == "Ready" }
      #expect(ready?.reason == "SupervisorExited")
      #expect(ready?.message.contains("signal 9") == true, "\(String(describing: ready))")
      // An errored sandbox can be started again.
      _ = try await c.startSandbox(.with { $0.name = "kill-test" })
      try await c.wait("kill-test", .ready)
      try await c.deleteAndWait("kill-test")
    }
    await gw.stopEverything()
  }

  @Test("gateway restart: READY sandboxes are usable again within 5 s; orphans are cleaned up")
  func restart() async throws {
    let first = try await SandboxGateway.start()
    let dir = first.dataDirectory
    let port = first.port
    let id = try await first.withClient { c in
      let s = try await c.create("restart-test")
      try await c.wait("restart-test", .ready)
      return s.metadata.id
    }
    let pidBefore = first.running.driver?.supervisorPID(id)
    await first.stop()
    // An orphan: the directory and a live process of a sandbox the log does not know.
    let orphanID = "00000000-0000-4000-8000-000000000001"
    let orphan = try Spawner.spawn("/bin/sleep", ["300"], environment: [:], newSession: true)
    let ticks = HostProcess.stat(orphan.pid)!.startTicks
    let orphanDir = dir + "/sandboxes/" + orphanID
    try FileManager.default.createDirectory(atPath: orphanDir, withIntermediateDirectories: true)
    try JSONEncoder().encode(SandboxInstance(pid: orphan.pid, startTicks: ticks, instanceID: "x", endpoint: "https://127.0.0.1:\(port)", startedNs: 0))
      .write(to: URL(fileURLWithPath: orphanDir + "/instance.json"))

    let second = try await SandboxGateway.start(dataDirectory: dir, port: port)
    defer { Task { await second.stopEverything() } }
    let restarted = ContinuousClock.now
    try await second.withClient { c in
      var result: Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>.ExecResult?
      while ContinuousClock.now - restarted < .seconds(5) {
        if let r = try? await c.exec("restart-test", ["echo", "again"]) { result = r; break }
        try await Task.sleep(for: .milliseconds(100))
      }
      #expect(result?.out == "again\n")
      #expect(ContinuousClock.now - restarted < .seconds(5))
      #expect(try await c.get("restart-test").status.phase == .ready)
      #expect(second.running.driver?.supervisorPID(id) == pidBefore, "the supervisor survived and reconnected")
      for _ in 0..<50 where FileManager.default.fileExists(atPath: orphanDir) { try await Task.sleep(for: .milliseconds(100)) }
      #expect(!FileManager.default.fileExists(atPath: orphanDir))
      #expect(Spawner.poll(orphan.pid) != nil, "orphan process was killed")
      try await c.deleteAndWait("restart-test")
    }
    await second.stopEverything()
  }

  @Test("sandbox A cannot read or act on sandbox B; sandboxes cannot call user RPCs; operators cannot call supervisor RPCs")
  func authorization() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    let (a, b) = try await gw.withClient { c in
      let a = try await c.create("auth-a")
      let b = try await c.create("auth-b")
      try await c.wait("auth-a", .ready)
      try await c.wait("auth-b", .ready)
      return (a.metadata.id, b.metadata.id)
    }
    let (cert, key) = try gw.sandboxCertificate(a)
    try await gw.withClient(cert: cert, key: key) { c in
      func denied(_ body: () async throws -> Void) async {
        do {
          try await body()
          Issue.record("expected PERMISSION_DENIED")
        } catch let e as RPCError {
          #expect(e.code == .permissionDenied, "\(e)")
        } catch { Issue.record("\(error)") }
      }
      await denied { _ = try await c.get("auth-b") }
      await denied { _ = try await c.exec("auth-b", ["true"]) }
      await denied { _ = try await c.delete("auth-b") }
      await denied { _ = try await c.getSandboxLogs(.with { $0.sandbox = "auth-b" }) }
      await denied {
        _ = try await c.reportMainProcessExit(
          .with {
            $0.sandboxID = b; $0.exitCode = 1
          })
      }
      await denied {
        _ = try await c.pushSandboxLogs(
          request: StreamingClientRequest { w in
            try await w.write(
              .with {
                $0.sandboxID = b; $0.logs = [.with { $0.message = "forged" }]
              })
          })
      }
      await denied {
        try await c.connectSupervisor(
          request: StreamingClientRequest { w in
            try await w.write(.with { $0.hello = .with { $0.sandboxID = b } })
          }
        ) { r in for try await _ in r.messages {} }
      }
      // Its own sandbox is fine.
      _ = try await c.reportMainProcessExit(
        .with {
          $0.sandboxID = a; $0.exitCode = 0
        })
    }
    try await gw.withClient { c in
      do {
        _ = try await c.reportMainProcessExit(
          .with {
            $0.sandboxID = b; $0.exitCode = 1
          })
        Issue.record("operator called a supervisor RPC")
      } catch let e as RPCError { #expect(e.code == .permissionDenied) }
      let logs = try await c.getSandboxLogs(.with { $0.sandbox = "auth-b" })
      #expect(!logs.logs.contains { $0.message == "forged" })
      try await c.deleteAndWait("auth-a")
      try await c.deleteAndWait("auth-b")
    }
    await gw.stopEverything()
  }

  @Test("20 sandboxes created concurrently all reach READY and are deleted")
  func twentyConcurrent() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<20 {
          group.addTask {
            _ = try await c.create("many-\(i)")
            try await c.wait("many-\(i)", .ready, timeout: .seconds(90))
          }
        }
        try await group.waitForAll()
      }
      let r = try await c.exec("many-7", ["hostname"])
      #expect(r.out == "many-7\n")
      try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<20 { group.addTask { try await c.deleteAndWait("many-\(i)", timeout: .seconds(60)) } }
        try await group.waitForAll()
      }
      let left = try FileManager.default.contentsOfDirectory(atPath: gw.dataDirectory + "/sandboxes")
      #expect(left.isEmpty, "\(left)")
    }
    await gw.stopEverything()
  }

  @Test("delete or stop right after create (while PROVISIONING) wins over the driver's outcome")
  func deleteWhileProvisioning() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      for i in 0..<5 {
        _ = try await c.create("race-\(i)")
        try await c.deleteAndWait("race-\(i)", timeout: .seconds(15))
      }
      _ = try await c.create("race-stop")
      _ = try await c.stopSandbox(.with { $0.name = "race-stop" })
      try await c.wait("race-stop", .stopped, timeout: .seconds(15))
      try await Task.sleep(for: .milliseconds(500))
      #expect(try await c.get("race-stop").status.phase == .stopped)
      try await c.deleteAndWait("race-stop")
      let left = try FileManager.default.contentsOfDirectory(atPath: gw.dataDirectory + "/sandboxes")
      #expect(left.isEmpty, "\(left)")
    }
    await gw.stopEverything()
  }

  @Test("cpu/memory limits are enforced with cgroups where the host has them, else refused at create")
  func resourceLimits() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    let cgroups = gw.running.driver?.cgroups
    try await gw.withClient { c in
      let request = Openshell_V1_CreateSandboxRequest.with {
        $0.name = "limited"
        $0.spec.template.resources.fields = ["cpu": .init(stringValue: "200m"), "memory": .init(stringValue: "64Mi")]
        $0.workspaceScope = .with { $0.workspace = "default" }
      }
      guard let cgroups else {
        do {
          _ = try await c.createSandbox(request)
          Issue.record("limits accepted on a host without cgroups")
        } catch let e as RPCError {
          #expect(e.code == .failedPrecondition)
          #expect(e.message.contains("cgroup"), "\(e)")
        }
        return
      }
      _ = try await c.createSandbox(request)
      let s = try await c.wait("limited", .ready)
      let driver = try #require(gw.running.driver)
      let dirs = cgroups.directories(sandboxID: driver.cgroupName(s.metadata.id))
      // Named with the gateway's tag, so a copy of this data directory served alongside gets its own.
      #expect(dirs.allSatisfy { $0.hasSuffix("/openshell/\(s.metadata.id)-\(driver.networks.tag)") }, "\(dirs)")
      let supervisor = try #require(gw.running.driver?.supervisorPID(s.metadata.id))
      for dir in dirs {
        let procs = try String(contentsOfFile: dir + "/cgroup.procs", encoding: .utf8)
        #expect(procs.split(separator: "\n").contains(Substring(String(supervisor))), "the supervisor is in \(dir)")
      }
      switch cgroups.layout {
      case .legacy(let memory, let cpu):
        if memory != nil {
          let limit = try String(contentsOfFile: dirs[0] + "/memory.limit_in_bytes", encoding: .utf8)
          #expect(limit.trimmingCharacters(in: .whitespacesAndNewlines) == String(64 << 20))
        }
        if let cpu {
          let quota = try String(contentsOfFile: cpu + "/openshell/\(driver.cgroupName(s.metadata.id))/cpu.cfs_quota_us", encoding: .utf8)
          #expect(quota.trimmingCharacters(in: .whitespacesAndNewlines) == "20000")
        }
      case .unified:
        let max = try String(contentsOfFile: dirs[0] + "/memory.max", encoding: .utf8)
        #expect(max.trimmingCharacters(in: .whitespacesAndNewlines) == String(64 << 20))
      }
      // Allocating ~200 MB in a 64 MiB sandbox (from `yes`: /dev/zero is outside the default Landlock paths): the kernel's OOM killer ends it (SIGKILL → 137).
      let hog = try await c.exec("limited", ["sh", "-c", "x=$(yes a | head -c 200000000); echo survived ${#x}"])
      #expect(hog.exitCode == 137, "\(hog.exitCode as Any) \(hog.out) \(hog.err)")
      #expect(!hog.out.contains("survived"))
      #expect(hog.err.contains("killed: out of memory (limit 64Mi)"), "\(hog.err)")
      // The sandbox itself is still usable, and its cgroups go away with it.
      let ok = try await c.exec("limited", ["echo", "alive"])
      #expect(ok.out == "alive\n")
      try await c.deleteAndWait("limited")
      for dir in dirs { #expect(!FileManager.default.fileExists(atPath: dir), "\(dir) removed") }
    }
    await gw.stopEverything()
  }

  @Test("a workload template's environment reaches sandboxes created from it; the request's variables win")
  func templateEnvironment() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.createSandboxTemplate(
        .with {
          $0.template.metadata.name = "envtpl"
          $0.template.spec.workload.environment = ["TPL_ONLY": "from-template", "BOTH": "template"]
        })
      _ = try await c.createSandbox(
        .with {
          $0.name = "tplenv"
          $0.workloadTemplate = "envtpl"
          $0.spec = .with { $0.template.environment = ["BOTH": "request"] }
          $0.workspaceScope = .with { $0.workspace = "default" }
        })
      try await c.wait("tplenv", .ready)
      let r = try await c.exec("tplenv", ["sh", "-c", "echo $TPL_ONLY $BOTH"])
      #expect(r.exitCode == 0 && r.out == "from-template request\n", "\(r.out) \(r.err)")
      // A later change of the template does not change the sandbox created from the earlier version.
      let recorded = try await c.get("tplenv")
      // (Values are sealed and shown redacted: SandboxEnvironmentSecretsTests.)
      #expect(recorded.spec.template.environment == ["TPL_ONLY": "REDACTED", "BOTH": "REDACTED"])
    }
    await gw.stopEverything()
  }

  @Test("unsupported specs are refused at create with FAILED_PRECONDITION")
  func unsupportedSpec() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      do {
        _ = try await c.createSandbox(.with { $0.spec = .with { $0.template = .with { $0.image = "ubuntu:24.04" } } })
        Issue.record("image accepted")
      } catch let e as RPCError {
        #expect(e.code == .failedPrecondition)
        #expect(e.message.contains("podman"))
      }
      // The same rule for an image that comes from a workload template.
      _ = try await c.createSandboxTemplate(
        .with {
          $0.template.metadata.name = "ubuntu"
          $0.template.spec.workload.image = "ubuntu:24.04"
        })
      do {
        _ = try await c.createSandbox(
          .with {
            $0.name = "from-image"; $0.workloadTemplate = "ubuntu"
          })
        Issue.record("template image accepted")
      } catch let e as RPCError {
        #expect(e.code == .failedPrecondition)
        #expect(e.message.contains("podman"))
        #expect(e.message.contains("ubuntu"))
      }
      let listed = try await c.listSandboxes(.init())
      #expect(listed.sandboxes.isEmpty, "a refused create leaves nothing behind")
    }
    await gw.stopEverything()
  }
}

/// Host pids whose NUL-separated command line contains `fragment` (e.g. `sleep\0123`); zombies excluded.
func hostProcesses(containing fragment: String) -> [Int32] {
  guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
  return entries.compactMap(Int32.init).filter { pid in
    guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return false }
    return String(decoding: data, as: UTF8.self).contains(fragment)
  }
}
