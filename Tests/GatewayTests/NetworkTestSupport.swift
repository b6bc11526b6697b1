import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import PolicyKit
import SandboxProtocol
import Testing

@testable import Gateway

/// A test upstream on 127.0.0.1 (a python3 process started and ended by the test).
final class Upstream: Sendable {
  let pid: Int32
  let port: Int
  let directory: String

  /// `kind`: "http" (serves `directory`, which holds `hello.txt` and `big.bin` when `bigMiB` > 0) or
  /// "hold" (accepts connections and never answers).
  static func start(_ kind: String, bigMiB: Int = 0) throws -> Upstream {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("upstream-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try "hello-from-upstream\n".write(toFile: dir + "/hello.txt", atomically: true, encoding: .utf8)
    if bigMiB > 0 {
      FileManager.default.createFile(atPath: dir + "/big.bin", contents: Data(count: bigMiB << 20))
    }
    let script =
      kind == "http"
      ? """
      import http.server, os, sys
      os.chdir(sys.argv[1])
      class H(http.server.SimpleHTTPRequestHandler):
          def log_message(self, *a): pass
      s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
      open(sys.argv[2], 'w').write(str(s.server_address[1]))
      s.serve_forever()
      """
      : """
      import socket, sys
      s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)
      open(sys.argv[2], 'w').write(str(s.getsockname()[1]))
      held = []
      while True:
          c, _ = s.accept(); held.append(c)
      """
    let portFile = dir + "/port"
    let p = try Spawner.spawn("/usr/bin/python3", ["-c", script, dir, portFile + ".tmp"], environment: ["PATH": "/usr/bin:/bin"])
    var port: Int?
    for _ in 0..<500 {
      if let text = try? String(contentsOfFile: portFile + ".tmp", encoding: .utf8), let n = Int(text) {
        port = n
        break
      }
      Thread.sleep(forTimeInterval: 0.01)
    }
    guard let port else {
      kill(p.pid, SIGKILL)
      _ = Spawner.waitBlocking(p.pid)
      throw RPCError(code: .internalError, message: "upstream \(kind) did not start")
    }
    return Upstream(pid: p.pid, port: port, directory: dir)
  }

  init(pid: Int32, port: Int, directory: String) {
    self.pid = pid
    self.port = port
    self.directory = directory
  }

  func stop() {
    kill(pid, SIGKILL)
    _ = Spawner.waitBlocking(pid)
    try? FileManager.default.removeItem(atPath: directory)
  }
}

enum NetworkPolicies {
  /// A policy (restrictive default filesystem/process sections) with `rules` as network_policies YAML
  /// (indented by 2 spaces), e.g. "  local:\n    endpoints: ...".
  static func policy(_ rules: String) throws -> Openshell_Sandbox_V1_SandboxPolicy {
    let yaml = """
      version: 1
      filesystem_policy:
        include_workdir: true
        read_only: [/usr, /lib, /etc, /proc]
        read_write: [/sandbox, /tmp]
      process:
        run_as_user: sandbox
        run_as_group: sandbox
      """ + (rules.isEmpty ? "\n" : "\nnetwork_policies:\n" + rules + "\n")
    return try PolicyYAML.parse(yaml).policy
  }
}

extension Openshell_V1_OpenShell.Client where Transport == HTTP2ClientTransport.Posix {
  func createWithPolicy(_ name: String, _ policy: Openshell_Sandbox_V1_SandboxPolicy) async throws {
    _ = try await createSandbox(
      .with {
        $0.name = name
        $0.spec = .with { $0.policy = policy }
        $0.workspaceScope = .with { $0.workspace = "default" }
      })
  }

  /// Waits until the sandbox's latest policy revision is LOADED (the proxy enforces it then).
  func waitLoaded(_ name: String, version: UInt32? = nil, timeout: Duration = .seconds(20)) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if let r = try? await getSandboxPolicyStatus(
        .with {
          $0.sandbox = name; $0.workspaceScope = .with { $0.workspace = "default" }
        }),
        r.revision.status == .loaded, version == nil || r.revision.version == version!
      {
        return
      }
      try await Task.sleep(for: .milliseconds(50))
    }
    throw RPCError(code: .deadlineExceeded, message: "policy of \(name) not loaded in time")
  }

  func updatePolicy(_ name: String, _ policy: Openshell_Sandbox_V1_SandboxPolicy) async throws -> UInt32 {
    try await updateConfig(
      .with {
        $0.sandbox = name; $0.policy = policy; $0.workspaceScope = .with { $0.workspace = "default" }
      }
    ).version
  }

  /// The sandbox's log lines (what `openshell logs NAME` prints).
  func logLines(_ name: String) async throws -> [Openshell_V1_SandboxLogLine] {
    try await getSandboxLogs(
      .with {
        $0.sandbox = name; $0.lines = 2000; $0.workspaceScope = .with { $0.workspace = "default" }
      }
    ).logs
  }
}

/// Environment for commands that must use the proxy even for loopback names (the sandbox's NO_PROXY
/// exempts 127.0.0.1 and localhost, which inside the sandbox are its own loopback).
let viaProxy = ["NO_PROXY": "", "no_proxy": ""]

/// Runs `body` with a fresh gateway; stops it and every sandbox it runs afterwards, also on failure.
func withSandboxGateway(_ body: (SandboxGateway) async throws -> Void) async throws {
  let gw = try await SandboxGateway.start()
  do { try await body(gw) } catch {
    await gw.stopEverything()
    throw error
  }
  await gw.stopEverything()
}

/// Test host names for the loopback upstreams: lines appended to the host's /etc/hosts for the duration
/// of a test (the sandbox's proxy resolves through it, "hosts: files dns"), so a resolved name never
/// becomes a DNS query that leaves the machine. `remove()` takes exactly those lines out again.
struct TestHosts {
  let marker = "# openshell-test-\(UUID().uuidString)"
  let names: [String]

  init(_ names: [String]) throws {
    self.names = names
    let lines = names.map { "127.0.0.1 \($0) \(marker)\n" }.joined()
    guard let h = FileHandle(forWritingAtPath: "/etc/hosts") else { throw RPCError(code: .internalError, message: "cannot open /etc/hosts") }
    defer { try? h.close() }
    h.seekToEndOfFile()
    h.write(Data(lines.utf8))
  }

  func remove() {
    guard let text = try? String(contentsOfFile: "/etc/hosts", encoding: .utf8) else { return }
    let kept = text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasSuffix(marker) }
    // In place (not a rename): /etc/hosts may be a bind mount.
    if let h = FileHandle(forWritingAtPath: "/etc/hosts") {
      let data = Data(kept.joined(separator: "\n").utf8)
      h.write(data)
      h.truncateFile(atOffset: UInt64(data.count))
      try? h.close()
    }
  }
}
