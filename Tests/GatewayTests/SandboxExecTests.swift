import Foundation
import GRPCCore
import GRPCProtobuf
import OpenShellAPI
import SwiftProtobuf
import Testing

@testable import Gateway

/// Exec edge cases and spec validation, run with the other local-driver tests (same suite, serialized).
extension SandboxLifecycleTests {
  @Test("exec: a cancelled ExecSandbox (client gone, client deadline) kills the command")
  func execCancelled() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.create("exec-cancel")
      try await c.wait("exec-cancel", .ready)

      // The client's task is cancelled while the command runs (as when the CLI is interrupted).
      let marker = "4242\(Int.random(in: 100_000...999_999))"
      let client = Task { try await c.exec("exec-cancel", ["sh", "-c", "sleep \(marker)"]) }
      try await waitForProcess("sleep\0\(marker)", running: true, timeout: .seconds(10))
      client.cancel()
      _ = await client.result
      try await waitForProcess("sleep\0\(marker)", running: false, timeout: .seconds(5))

      // The client's deadline passes while the command runs.
      let marker2 = "4242\(Int.random(in: 100_000...999_999))"
      let deadline = Task {
        var options = CallOptions.defaults
        options.timeout = .seconds(3)
        let request = Openshell_V1_ExecSandboxRequest.with {
          $0.sandbox = "exec-cancel"
          $0.command = ["sh", "-c", "sleep \(marker2)"]
          $0.workspaceScope = .with { $0.workspace = "default" }
        }
        return try await c.execSandbox(request, options: options) { response in
          for try await _ in response.messages {}
        }
      }
      try await waitForProcess("sleep\0\(marker2)", running: true, timeout: .seconds(3))
      let outcome = await deadline.result
      #expect(throws: RPCError.self) { try outcome.get() }
      try await waitForProcess("sleep\0\(marker2)", running: false, timeout: .seconds(5))

      // The sandbox is still usable.
      let ok = try await c.exec("exec-cancel", ["echo", "ok"])
      #expect(ok.out == "ok\n")
      try await c.deleteAndWait("exec-cancel")
    }
    await gw.stopEverything()
  }

  @Test("exec: stopping the sandbox under a running command answers UNAVAILABLE naming the sandbox, not the transport")
  func execDuringStop() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.create("exec-stop")
      try await c.wait("exec-stop", .ready)
      let marker = "4244\(Int.random(in: 100_000...999_999))"
      let exec = Task { try await c.exec("exec-stop", ["sh", "-c", "sleep \(marker)"]) }
      try await waitForProcess("sleep\0\(marker)", running: true, timeout: .seconds(10))
      _ = try await c.stopSandbox(
        .with {
          $0.name = "exec-stop"; $0.workspaceScope = .with { $0.workspace = "default" }
        })
      let error = await #expect(throws: RPCError.self) { try await exec.value }
      #expect(error?.code == .unavailable)
      #expect(error?.message == "the supervisor of sandbox default/exec-stop went away before the command finished (was the sandbox stopped?)")
      try await waitForProcess("sleep\0\(marker)", running: false, timeout: .seconds(5))
      try await c.deleteAndWait("exec-stop")
    }
    await gw.stopEverything()
  }

  @Test("exec: a graceful gateway shutdown lets a running exec finish within the grace period")
  func execDuringGracefulShutdown() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.create("exec-drain")
      try await c.wait("exec-drain", .ready)
      let marker = "4243\(Int.random(in: 100_000...999_999))"
      let exec = Task { try await c.exec("exec-drain", ["sh", "-c", "sleep 0.\(marker); echo done"]) }
      try await waitForProcess("sleep\00.\(marker)", running: true, timeout: .seconds(10))
      gw.running.shutdown()  // grace period 2 s
      let r = try await exec.value
      #expect(r.exitCode == 0)
      #expect(r.out == "done\n")
    }
    await gw.stopEverything()
  }

  @Test("exec: a command that is not found (127) or not executable (126) is reported like a shell does")
  func execCommandNotFound() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.create("exec-notfound")
      try await c.wait("exec-notfound", .ready)

      let missing = try await c.exec("exec-notfound", ["nonexistentcmd", "arg"])
      #expect(missing.exitCode == 127)
      #expect(missing.err == "openshell-sandbox: nonexistentcmd: command not found\n")
      #expect(missing.out == "")

      let missingPath = try await c.exec("exec-notfound", ["/sandbox/nope/cmd"])
      #expect(missingPath.exitCode == 127)
      #expect(missingPath.err == "openshell-sandbox: /sandbox/nope/cmd: no such file or directory\n")

      let setup = try await c.exec(
        "exec-notfound", ["sh", "-c", "printf '#!/bin/sh\\necho ran\\n' > /sandbox/not-executable && chmod 644 /sandbox/not-executable"])
      #expect(setup.exitCode == 0, "\(setup.err)")
      let denied = try await c.exec("exec-notfound", ["/sandbox/not-executable"])
      #expect(denied.exitCode == 126)
      #expect(denied.err == "openshell-sandbox: /sandbox/not-executable: permission denied\n")
      // Relative to the workdir, and found in the sandbox's PATH (the request's PATH).
      let relative = try await c.exec("exec-notfound", ["./not-executable"], workdir: "/sandbox")
      #expect(relative.exitCode == 126)
      #expect(relative.err == "openshell-sandbox: ./not-executable: permission denied\n")
      let viaPath = try await c.exec("exec-notfound", ["not-executable"], env: ["PATH": "/sandbox:/usr/bin:/bin"])
      #expect(viaPath.exitCode == 126)
      #expect(viaPath.err == "openshell-sandbox: not-executable: permission denied\n")
      let directory = try await c.exec("exec-notfound", ["/sandbox"])
      #expect(directory.exitCode == 126)
      #expect(directory.err == "openshell-sandbox: /sandbox: is a directory\n")
      // A workdir that is missing, or a file.
      let noWorkdir = try await c.exec("exec-notfound", ["true"], workdir: "/sandbox/absent")
      #expect(noWorkdir.exitCode == 1 && noWorkdir.err == "openshell-sandbox: workdir /sandbox/absent: no such directory\n", "\(noWorkdir.err)")
      let fileWorkdir = try await c.exec("exec-notfound", ["true"], workdir: "/sandbox/not-executable")
      #expect(
        fileWorkdir.exitCode == 1 && fileWorkdir.err == "openshell-sandbox: workdir /sandbox/not-executable: not a directory\n", "\(fileWorkdir.err)")

      // Once executable, the same command runs, also when found through PATH.
      _ = try await c.exec("exec-notfound", ["chmod", "755", "/sandbox/not-executable"])
      let ran = try await c.exec("exec-notfound", ["not-executable"], env: ["PATH": "/sandbox:/usr/bin:/bin"])
      #expect(ran.exitCode == 0)
      #expect(ran.out == "ran\n")
      try await c.deleteAndWait("exec-notfound")
    }
    await gw.stopEverything()
  }

  @Test("invalid environment variable names are refused with INVALID_ARGUMENT naming the field")
  func invalidEnvironment() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      for (name, spec, field) in [
        ("env-a", Openshell_V1_SandboxSpec.with { $0.environment = ["A B": "x"] }, "spec.environment"),
        ("env-b", .with { $0.environment = ["1X": "x"] }, "spec.environment"),
        (
          "env-c",
          .with {
            $0.environment = ["X": "ok"]; $0.template.environment = ["A-B": "x"]
          }, "spec.template.environment"
        ),
        ("env-d", .with { $0.template.environment = ["": "x"] }, "spec.template.environment"),
      ] {
        let e = await rpcError {
          _ = try await c.createSandbox(
            .with {
              $0.name = name; $0.spec = spec
            })
        }
        #expect(e?.code == .invalidArgument, "\(name): \(String(describing: e))")
        #expect(try fieldViolations(e) == [field], "\(name)")
      }
      #expect(try await c.listSandboxes(.init()).sandboxes.isEmpty, "a refused create leaves nothing behind")

      _ = try await c.create("env-ok", env: ["GOOD_1": "x"])
      try await c.wait("env-ok", .ready)
      for bad in ["A B", "1X", "A=B", "A-B", ""] {
        let e = await rpcError { _ = try await c.exec("env-ok", ["true"], env: [bad: "x"]) }
        #expect(e?.code == .invalidArgument, "\(bad.debugDescription): \(String(describing: e))")
        #expect(try fieldViolations(e) == ["environment"], "\(bad.debugDescription)")
      }
      let good = try await c.exec("env-ok", ["sh", "-c", "echo $GOOD_1 $_under"], env: ["_under": "y"])
      #expect(good.out == "x y\n")
      try await c.deleteAndWait("env-ok")
    }
    await gw.stopEverything()
  }

  @Test("malformed resource quantities are INVALID_ARGUMENT; what the host cannot enforce is FAILED_PRECONDITION")
  func malformedResources() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c async throws in
      func create(_ resources: [String: Google_Protobuf_Value]) async -> RPCError? {
        await rpcError {
          _ = try await c.createSandbox(
            .with {
              $0.name = "res"
              $0.spec.template.resources = Google_Protobuf_Struct(fields: resources)
            })
        }
      }
      for resources: [String: Google_Protobuf_Value] in [
        ["memory": "1x"], ["cpu": "1m"], ["cpu": "lots"], ["memory": "-5Mi"], ["memory": "1Mi"],
        ["limits": .init(structValue: .init(fields: ["memory": "12 parsecs"]))], ["limits": "2"],
      ] {
        let e = await create(resources)
        #expect(e?.code == .invalidArgument, "\(resources): \(String(describing: e))")
        #expect(try fieldViolations(e) == ["spec.template.resources"], "\(resources)")
        var expected = ""
        do { _ = try ResourceLimits.parse(Google_Protobuf_Struct(fields: resources)) } catch let error as ResourceLimitsError { expected = error.message } catch
        {}
        #expect(e?.message == "spec.template.resources: \(expected)", "the message of ResourceLimits.parse")
      }
      // Well formed, but not something the local driver supports: refused by the driver's check.
      let unknown = await create(["ephemeral-storage": "1Gi"])
      #expect(unknown?.code == .failedPrecondition, "\(String(describing: unknown))")
      if gw.running.driver?.cgroups == nil {
        let e = await create(["memory": "64Mi"])
        #expect(e?.code == .failedPrecondition, "\(String(describing: e))")
        #expect(e?.message.contains("cgroup") == true, "\(String(describing: e))")
      }
      #expect(try await c.listSandboxes(.init()).sandboxes.isEmpty, "a refused create leaves nothing behind")
    }
    await gw.stopEverything()
  }
}

/// Polls /proc until a process whose command line contains `fragment` runs (or no longer runs).
func waitForProcess(_ fragment: String, running: Bool, timeout: Duration, sourceLocation: SourceLocation = #_sourceLocation) async throws {
  let deadline = ContinuousClock.now + timeout
  while hostProcesses(containing: fragment).isEmpty == running {
    guard ContinuousClock.now < deadline else {
      Issue.record(
        "\(fragment.replacingOccurrences(of: "\0", with: " ")) \(running ? "did not start" : "still runs") after \(timeout)", sourceLocation: sourceLocation)
      return
    }
    try await Task.sleep(for: .milliseconds(50))
  }
}

/// The fields named by the google.rpc.BadRequest details of `error`.
func fieldViolations(_ error: RPCError?) throws -> [String] {
  guard let error else { return [] }
  return try error.unpackGoogleRPCStatus()?.details.compactMap(\.badRequest).flatMap { $0.violations.map(\.field) } ?? []
}
