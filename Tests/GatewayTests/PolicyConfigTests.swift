import EventLog
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import PolicyKit
import Projections
import Testing

@testable import Gateway

#if canImport(Glibc)
  import Glibc
#endif

/// Makes the transport type visible to every file of this test module (SandboxLifecycleTests.swift
/// names it without importing GRPCNIOTransportHTTP2). Declarations of this module shadow the import.
typealias HTTP2ClientTransport = GRPCNIOTransportHTTP2.HTTP2ClientTransport

/// A gateway for config tests: real log, PKI and mTLS; by default no compute driver (sandboxes stay
/// PROVISIONING and the tests play the supervisor with the sandbox's own certificate).
struct ConfigGateway {
  let gw: SandboxGateway

  static func start(driver: String = "none") async throws -> ConfigGateway {
    let dir = try GatewayTestSupport.temporaryDirectory("cfg")
    var c = GatewayConfiguration(dataDirectory: dir)
    c.port = 0
    c.handleSignals = false
    c.shutdownGracePeriod = .seconds(2)
    c.computeDriver = driver
    let box = SandboxGateway.Box()
    let task = Task { try await serve(c) { running, port in box.set(running, port) } }
    for _ in 0..<1000 {
      if let (r, p) = box.get() { return ConfigGateway(gw: SandboxGateway(dataDirectory: dir, port: p, running: r, task: task)) }
      try await Task.sleep(for: .milliseconds(10))
    }
    task.cancel()
    throw RPCError(code: .unavailable, message: "gateway did not start")
  }

  func stop() async { await gw.stopEverything() }

  /// Both service clients over one connection, as `cert` (default: the operator).
  func withClients<R: Sendable>(
    cert: (String, String)? = nil,
    _ body: @Sendable (OSClient, Openshell_Inference_V1_Inference.Client<HTTP2ClientTransport.Posix>) async throws -> R
  ) async throws -> R {
    let pki = gw.pki
    let security = HTTP2ClientTransport.Posix.TransportSecurity.mTLS(
      certificateChain: [.file(path: cert?.0 ?? pki.clientCertificatePath, format: .pem)],
      privateKey: .file(path: cert?.1 ?? pki.clientKeyPath, format: .pem)
    ) { $0.trustRoots = .certificates([.file(path: pki.caCertificatePath, format: .pem)]) }
    let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: gw.port), transportSecurity: security)
    return try await withGRPCClient(transport: transport) { client in
      try await body(Openshell_V1_OpenShell.Client(wrapping: client), Openshell_Inference_V1_Inference.Client(wrapping: client))
    }
  }

  func asSandbox<R: Sendable>(_ id: String, _ body: @Sendable (OSClient, Openshell_Inference_V1_Inference.Client<HTTP2ClientTransport.Posix>) async throws -> R)
    async throws -> R
  {
    try await withClients(cert: try gw.sandboxCertificate(id), body)
  }
}

enum PolicyFixtures {
  static let base = """
    version: 1
    filesystem_policy:
      include_workdir: true
      read_only: [/usr, /lib, /etc]
      read_write: [/sandbox, /tmp]
    landlock:
      compatibility: best_effort
    process:
      run_as_user: sandbox
      run_as_group: sandbox
    network_policies:
      pypi:
        endpoints:
          - host: pypi.org
            port: 443
            protocol: rest
            enforcement: enforce
            access: read-only
        binaries:
          - path: /usr/bin/python3
    """

  static func policy(_ yaml: String) throws -> Openshell_Sandbox_V1_SandboxPolicy { try PolicyYAML.parse(yaml).policy }

  /// `base` plus another network rule and a read-only path (a valid live update).
  static func grown() throws -> Openshell_Sandbox_V1_SandboxPolicy {
    var p = try policy(base)
    p.networkPolicies["github"] = .with {
      $0.name = "github";
      $0.endpoints = [
        .with {
          $0.host = "api.github.com"; $0.ports = [443]
        }
      ]
    }
    return p
  }

  /// Passes the gateway's checks, fails the supervisor's L7 checks (rules and access together).
  static func l7Broken() throws -> Openshell_Sandbox_V1_SandboxPolicy {
    var p = try grown()
    p.networkPolicies["bad"] = .with {
      $0.endpoints = [
        .with {
          $0.host = "x.example.com"; $0.ports = [443]; $0.protocol = "rest"; $0.access = .full
          $0.rules = [.with { $0.allow = .with { $0.method = "GET" } }]
        }
      ]
    }
    return p
  }
}

extension Openshell_V1_OpenShell.Client where Transport == HTTP2ClientTransport.Posix {
  func setPolicy(_ sandbox: String, _ p: Openshell_Sandbox_V1_SandboxPolicy) async throws -> Openshell_V1_UpdateConfigResponse {
    try await updateConfig(
      .with {
        $0.sandbox = sandbox; $0.policy = p; $0.workspaceScope = .ws("default")
      })
  }

  func policyStatus(_ sandbox: String, _ version: UInt32 = 0) async throws -> Openshell_V1_GetSandboxPolicyStatusResponse {
    try await getSandboxPolicyStatus(
      .with {
        $0.sandbox = sandbox; $0.version = version; $0.workspaceScope = .ws("default")
      })
  }

  func report(_ id: String, _ version: UInt32, _ status: Openshell_V1_PolicyStatus, _ error: String = "") async throws {
    _ = try await reportPolicyStatus(
      .with {
        $0.sandboxID = id; $0.version = version; $0.status = status; $0.loadError = error
      })
  }
}

/// The RPC error (code and message) a call produced.
func rpcError(_ body: () async throws -> Void) async -> RPCError? {
  do {
    try await body()
    return nil
  } catch let e as RPCError {
    return e
  } catch {
    return RPCError(code: .unknown, message: "\(error)")
  }
}

@Suite("Policies and settings", .serialized, .timeLimit(.minutes(3)))
struct PolicyConfigTests {
  @Test("revisions: lazy v1 from spec, pending → loaded/failed, superseded, identical resubmission, live-update and safety rules")
  func revisionLifecycle() async throws {
    let g = try await ConfigGateway.start()
    defer { Task { await g.stop() } }
    let base = try PolicyFixtures.policy(PolicyFixtures.base)
    let id = try await g.withClients { c, _ in
      try await c.createSandbox(
        .with {
          $0.name = "pol"
          $0.spec = .with { $0.policy = base }
          $0.workspaceScope = .ws("default")
        }
      ).sandbox.metadata.id
    }
    // Revision 1 is the creation policy, recorded with the sandbox and pending until its supervisor
    // reports it loaded (the gateway never claims that on its own); reads never append events.
    let seqBefore = g.gw.running.store.log.headSeq
    try await g.withClients { c, _ in
      let v1 = try await c.policyStatus("pol")
      #expect(v1.revision.version == 1)
      #expect(v1.revision.status == .pending)
      #expect(v1.activeVersion == 0)
      #expect(v1.revision.policyHash == PolicyRules.hash(base))
      _ = try await c.getSandboxConfig(
        .with {
          $0.name = "pol"; $0.workspaceScope = .ws("default")
        })
      _ = try await c.listSandboxPolicies(
        .with {
          $0.sandbox = "pol"; $0.workspaceScope = .ws("default")
        })
    }
    #expect(g.gw.running.store.log.headSeq == seqBefore, "reads appended events")
    try await g.asSandbox(id) { c, _ in try await c.report(id, 1, .loaded) }
    try await g.withClients { c, _ in
      let v1 = try await c.policyStatus("pol")
      #expect(v1.revision.status == .loaded)
      #expect(v1.activeVersion == 1)

      let r2 = try await c.setPolicy("pol", try PolicyFixtures.grown())
      #expect(r2.version == 2)
      #expect(try await c.policyStatus("pol", 2).revision.status == .pending)
      // Identical content returns the existing version.
      #expect(try await c.setPolicy("pol", try PolicyFixtures.grown()).version == 2)
      #expect(try await c.setPolicy("pol", PolicyRules.normalized(try PolicyFixtures.grown())).policyHash == r2.policyHash)
      // Resubmitting revision 1's content makes a new revision (it is not the latest).
      let r3 = try await c.setPolicy("pol", base)
      #expect(r3.version == 3)
      #expect(try await c.policyStatus("pol", 2).revision.status == .superseded)  // pending replaced by newer
      let r4 = try await c.setPolicy("pol", try PolicyFixtures.grown())
      #expect(r4.version == 4)
    }
    // The supervisor (the sandbox's own identity) acknowledges.
    try await g.asSandbox(id) { c, _ in try await c.report(id, 4, .loaded) }
    try await g.withClients { c, _ in
      let s4 = try await c.policyStatus("pol")
      #expect(s4.revision.status == .loaded)
      #expect(s4.activeVersion == 4)
      #expect(s4.revision.hasLoadedTime)
      #expect(try await c.policyStatus("pol", 1).revision.status == .superseded)
      #expect(try await c.get("pol").status.currentPolicyVersion == 4)

      // A revision the supervisor fails to load keeps the last good one active.
      let r5 = try await c.setPolicy("pol", try PolicyFixtures.l7Broken())
      #expect(r5.version == 5)
    }
    let l7 = PolicyRules.l7Issues(try PolicyFixtures.l7Broken()).map(\.description).joined(separator: "; ")
    try await g.asSandbox(id) { c, _ in try await c.report(id, 5, .failed, l7) }
    try await g.withClients { c, _ in
      let s5 = try await c.policyStatus("pol", 5)
      #expect(s5.revision.status == .failed)
      #expect(s5.revision.loadError.contains("rules and access are mutually exclusive"))
      #expect(s5.activeVersion == 4)
      #expect(try await c.policyStatus("pol", 4).revision.status == .loaded)
      #expect(try await c.get("pol").status.currentPolicyVersion == 4)

      // Live updates: filesystem, landlock and process are fixed at start (any change is refused).
      var added = try PolicyFixtures.grown()
      added.filesystem.readOnly.append("/opt")
      let grow = await rpcError { _ = try await c.setPolicy("pol", added) }
      #expect(grow?.code == .invalidArgument)
      #expect(
        grow?.message.contains(
          "filesystem read_only path '/opt' cannot be added on a live sandbox (applied at startup; `sandbox stop` + `sandbox start` applies it)") == true)
      var shrunk = base
      shrunk.filesystem.readOnly.removeAll { $0 == "/usr" }
      shrunk.landlock.compatibility = "hard_requirement"
      let live = await rpcError { _ = try await c.setPolicy("pol", shrunk) }
      #expect(live?.code == .invalidArgument)
      #expect(live?.message.contains("filesystem read_only path '/usr' cannot be removed on a live sandbox") == true)
      #expect(
        live?.message.contains("landlock policy cannot be changed on a live sandbox (applied at startup; `sandbox stop` + `sandbox start` applies it)") == true)
      var unsafe = try PolicyFixtures.grown()
      unsafe.filesystem.readWrite.append("/")
      unsafe.networkPolicies["tld"] = .with {
        $0.endpoints = [
          .with {
            $0.host = "*.com"; $0.ports = [443]
          }
        ]
      }
      let bad = await rpcError { _ = try await c.setPolicy("pol", unsafe) }
      #expect(bad?.code == .invalidArgument)
      #expect(
        bad?.message.contains("policy contains unsafe content: read-write path is overly broad: /; network policy 'tld': TLD wildcard '*.com' is not allowed")
          == true)
      let both = await rpcError {
        _ = try await c.updateConfig(
          .with {
            $0.sandbox = "pol"; $0.policy = base; $0.settingKey = "dummy_int"; $0.workspaceScope = .ws("default")
          })
      }
      #expect(both?.message.contains("policy and setting_key cannot be set in the same request") == true)
      let neither = await rpcError {
        _ = try await c.updateConfig(
          .with {
            $0.sandbox = "pol"; $0.workspaceScope = .ws("default")
          })
      }
      #expect(neither?.message.contains("either policy or setting_key must be provided") == true)
      let noName = await rpcError { _ = try await c.updateConfig(.with { $0.policy = base }) }
      #expect(noName?.message.contains("name is required for sandbox-scoped updates") == true)
      let err1 = await rpcError { _ = try await c.setPolicy("missing", base) }
      #expect(err1?.code == .notFound)

      let list = try await c.listSandboxPolicies(
        .with {
          $0.sandbox = "pol"; $0.workspaceScope = .ws("default")
        })
      #expect(list.revisions.map(\.version) == [5, 4, 3, 2, 1])
      #expect(list.revisions.map(\.status) == [.failed, .loaded, .superseded, .superseded, .superseded])
      #expect(!list.revisions[0].hasPolicy)
      let page = try await c.listSandboxPolicies(
        .with {
          $0.sandbox = "pol"; $0.pageSize = 2; $0.workspaceScope = .ws("default")
        })
      #expect(page.revisions.map(\.version) == [5, 4])
      let next = try await c.listSandboxPolicies(
        .with {
          $0.sandbox = "pol"; $0.pageSize = 2; $0.pageToken = page.nextPageToken; $0.workspaceScope = .ws("default")
        })
      #expect(next.revisions.map(\.version) == [3, 2])

      // The sandbox's config: the newest revision that did not fail (v5 failed; v4 is in force).
      let cfg = try await c.getSandboxConfig(
        .with {
          $0.name = "pol"; $0.workspaceScope = .ws("default")
        })
      #expect(cfg.version == 4)
      #expect(cfg.policySource == .sandbox)
      #expect(cfg.configRevision != 0)
    }
    // The log has the lifecycle as events.
    let state = await g.gw.running.store.state
    #expect(state.policies[id]?.activeVersion == 4)
  }

  @Test("global policy overrides every sandbox and blocks sandbox updates until deleted")
  func globalPolicy() async throws {
    let g = try await ConfigGateway.start()
    defer { Task { await g.stop() } }
    let base = try PolicyFixtures.policy(PolicyFixtures.base)
    try await g.withClients { c, _ in
      _ = try await c.createSandbox(
        .with {
          $0.name = "a"; $0.spec = .with { $0.policy = base }; $0.workspaceScope = .ws("default")
        })
      let set = try await c.updateConfig(
        .with {
          $0.global = true; $0.policy = try PolicyFixtures.grown()
        })
      #expect(set.version == 1)
      #expect(
        try await c.updateConfig(
          .with {
            $0.global = true; $0.policy = try PolicyFixtures.grown()
          }
        ).version == 1)
      let blocked = await rpcError { _ = try await c.setPolicy("a", try PolicyFixtures.grown()) }
      #expect(blocked?.code == .failedPrecondition)
      #expect(blocked?.message == "policy is managed globally; delete global policy before sandbox policy update")
      let cfg = try await c.getSandboxConfig(
        .with {
          $0.name = "a"; $0.workspaceScope = .ws("default")
        })
      #expect(cfg.policySource == .global)
      #expect(cfg.globalPolicyVersion == 1)
      #expect(cfg.policyHash == PolicyRules.hash(try PolicyFixtures.grown()))
      let gs = try await c.getSandboxPolicyStatus(.with { $0.global = true })
      #expect(gs.revision.status == .loaded)
      #expect(gs.activeVersion == 1)
      let gw = try await c.getGatewayConfig(.init())
      #expect(gw.settings["policy"] != nil)
      let unsafe = await rpcError {
        _ = try await c.updateConfig(
          .with {
            $0.global = true; $0.policy = .with { $0.process.runAsUser = "root" }
          })
      }
      #expect(unsafe?.code == .invalidArgument)
      let v2 = try await c.updateConfig(
        .with {
          $0.global = true; $0.policy = base
        })
      #expect(v2.version == 2)

      let deleted = try await c.updateConfig(
        .with {
          $0.global = true; $0.settingKey = "policy"; $0.deleteSetting = true
        })
      #expect(deleted.deleted)
      #expect(
        try await c.updateConfig(
          .with {
            $0.global = true; $0.settingKey = "policy"; $0.deleteSetting = true
          }
        ).deleted == false)
      let list = try await c.listSandboxPolicies(.with { $0.global = true })
      #expect(list.revisions.map(\.status) == [.superseded, .superseded])
      #expect(
        try await c.getSandboxConfig(
          .with {
            $0.name = "a"; $0.workspaceScope = .ws("default")
          }
        ).policySource == .sandbox)
      #expect(try await c.setPolicy("a", try PolicyFixtures.grown()).version == 2)
    }
  }

  @Test("ReportPolicyStatus and GetSandboxConfig: a sandbox acts only for itself")
  func authorization() async throws {
    let g = try await ConfigGateway.start()
    defer { Task { await g.stop() } }
    let base = try PolicyFixtures.policy(PolicyFixtures.base)
    let (a, b) = try await g.withClients { c, _ in
      let a = try await c.createSandbox(
        .with {
          $0.name = "a"; $0.spec = .with { $0.policy = base }; $0.workspaceScope = .ws("default")
        }
      ).sandbox.metadata.id
      let b = try await c.createSandbox(
        .with {
          $0.name = "b"; $0.spec = .with { $0.policy = base }; $0.workspaceScope = .ws("default")
        }
      ).sandbox.metadata.id
      _ = try await c.setPolicy("b", try PolicyFixtures.grown())
      return (a, b)
    }
    try await g.asSandbox(a) { c, _ in
      let other = await rpcError { try await c.report(b, 2, .loaded) }
      #expect(other?.code == .permissionDenied)
      let err2 = await rpcError { try await c.report(a, 0, .loaded) }
      #expect(err2?.code == .invalidArgument)
      let err3 = await rpcError { try await c.report(a, 1, .pending) }
      #expect(err3?.code == .invalidArgument)
      let err4 = await rpcError { try await c.report(a, 9, .loaded) }
      #expect(err4?.code == .notFound)
      let cfgB = await rpcError {
        _ = try await c.getSandboxConfig(
          .with {
            $0.name = "b"; $0.workspaceScope = .ws("default")
          })
      }
      #expect(cfgB?.code == .permissionDenied)
      let own = try await c.getSandboxConfig(.init())
      #expect(own.version == 1)
      #expect(own.policy.networkPolicies["pypi"] != nil)
      let err5 = await rpcError { _ = try await c.setPolicy("b", base) }
      #expect(err5?.code == .permissionDenied)
      let err6 = await rpcError {
        _ = try await c.updateConfig(
          .with {
            $0.global = true; $0.policy = base
          })
      }
      #expect(err6?.code == .permissionDenied)
      let err7 = await rpcError { _ = try await c.policyStatus("a") }
      #expect(err7?.code == .permissionDenied)
    }
    try await g.withClients { c, _ in
      let err8 = await rpcError { try await c.report(b, 2, .loaded) }
      #expect(err8?.code == .permissionDenied)
      let pendingB = try await c.policyStatus("b")
      #expect(pendingB.revision.status == .pending)
    }
    try await g.asSandbox(b) { c, _ in try await c.report(b, 2, .loaded) }
    try await g.withClients { c, _ in
      let activeB = try await c.policyStatus("b")
      #expect(activeB.activeVersion == 2)
    }
  }

  @Test("settings: global and per sandbox, typed values, globally managed keys")
  func settings() async throws {
    let g = try await ConfigGateway.start()
    defer { Task { await g.stop() } }
    try await g.withClients { c, _ in
      _ = try await c.createSandbox(
        .with {
          $0.name = "s"; $0.workspaceScope = .ws("default")
        })
      func set(_ key: String, _ value: String, global: Bool = false) async throws -> Openshell_V1_UpdateConfigResponse {
        try await c.updateConfig(
          .with {
            $0.sandbox = global ? "" : "s"; $0.global = global; $0.settingKey = key; $0.settingValue = .with { $0.stringValue = value }
            $0.workspaceScope = .ws("default")
          })
      }
      let r1 = try await set("dummy_bool", "yes", global: true)
      #expect(r1.settingsRevision != 0)
      let gw = try await c.getGatewayConfig(.init())
      #expect(gw.settings["dummy_bool"]?.boolValue == true)
      #expect(gw.settingsRevision == r1.settingsRevision)
      let managed = await rpcError { _ = try await set("dummy_bool", "off") }
      #expect(managed?.code == .failedPrecondition)
      #expect(managed?.message.hasPrefix("setting 'dummy_bool' is managed globally") == true)
      _ = try await set("dummy_int", "42")
      let cfg = try await c.getSandboxConfig(
        .with {
          $0.name = "s"; $0.workspaceScope = .ws("default")
        })
      #expect(cfg.settings["dummy_int"]?.value.intValue == 42)
      #expect(cfg.settings["dummy_int"]?.scope == .sandbox)
      #expect(cfg.settings["dummy_bool"]?.scope == .global)
      #expect(cfg.version == 0 && !cfg.hasPolicy)
      let err9 = await rpcError { _ = try await set("dummy_int", "maybe") }
      #expect(err9?.code == .invalidArgument)
      let err10 = await rpcError { _ = try await set("nope", "1") }
      #expect(err10?.code == .invalidArgument)
      let err11 = await rpcError { _ = try await set("policy", "x", global: true) }
      #expect(err11?.code == .invalidArgument)
      let del = try await c.updateConfig(
        .with {
          $0.global = true; $0.settingKey = "dummy_bool"; $0.deleteSetting = true
        })
      #expect(del.deleted)
      #expect(del.settingsRevision == 0)
      // ocsf_json_enabled = true would ask for OCSF files the supervisor does not write: refused, not stored.
      for global in [true, false] {
        let ocsf = await rpcError { _ = try await set("ocsf_json_enabled", "yes", global: global) }
        #expect(ocsf?.code == .failedPrecondition, "global \(global)")
        #expect(ocsf?.message.hasPrefix("setting 'ocsf_json_enabled' = true is not supported yet") == true, "\(String(describing: ocsf))")
      }
      #expect(try await c.getGatewayConfig(.init()).settings["ocsf_json_enabled"] == nil)
      _ = try await set("ocsf_json_enabled", "0")
      #expect(
        try await c.getSandboxConfig(
          .with {
            $0.name = "s"; $0.workspaceScope = .ws("default")
          }
        ).settings["ocsf_json_enabled"]?.value.boolValue == false)
    }
  }
}

// MARK: inference

/// A small OpenAI-compatible server on loopback (python3 http.server): `GET /v1/models` answers 200
/// with the bearer token `sk-good`, 401 otherwise.
final class FakeOpenAI: @unchecked Sendable {
  let process = Process()
  let stdin = Pipe()
  let port: Int

  /// The server exits when its stdin closes (this process ended), so it never outlives the tests and
  /// never holds the test runner's output open.
  init() throws {
    let script = """
      import http.server, json, os, sys, threading
      def watchdog():
          sys.stdin.read()
          os._exit(0)
      threading.Thread(target=watchdog, daemon=True).start()
      class H(http.server.BaseHTTPRequestHandler):
          def log_message(self, *a): pass
          def do_GET(self):
              ok = self.headers.get('Authorization') == 'Bearer sk-good' or self.headers.get('x-api-key') == 'sk-good'
              body = json.dumps({'object': 'list', 'data': [{'id': 'm1', 'object': 'model'}]} if ok else {'error': {'message': 'invalid api key'}}).encode()
              self.send_response(200 if ok and self.path == '/v1/models' else (401 if not ok else 404))
              self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(body))); self.end_headers()
              self.wfile.write(body)
      s = http.server.HTTPServer(('127.0.0.1', 0), H)
      print(s.server_address[1], flush=True)
      s.serve_forever()
      """
    process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    process.arguments = ["-c", script]
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    process.standardInput = stdin
    try process.run()
    var line = Data()
    while let b = try out.fileHandleForReading.read(upToCount: 1), !b.isEmpty, b != Data("\n".utf8) { line.append(b) }
    guard let p = Int(String(decoding: line, as: UTF8.self)) else {
      kill(process.processIdentifier, SIGKILL)
      throw RPCError(code: .unavailable, message: "fake server did not start")
    }
    port = p
  }

  var baseURL: String { "http://127.0.0.1:\(port)/v1" }

  func stop() {
    try? stdin.fileHandleForWriting.close()
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
  }
}

@Suite(
  "Inference routes", .serialized, .timeLimit(.minutes(3)),
  .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "needs python3 for the fake endpoint"))
struct InferenceTests {
  func provider(_ c: OSClient, _ name: String, type: String = "openai", key: String, base: String) async throws {
    _ = try await c.createProvider(
      .with {
        $0.provider = .with {
          $0.metadata.name = name
          $0.type = type
          $0.credentials = [type == "anthropic" ? "ANTHROPIC_API_KEY" : type == "github" ? "GITHUB_TOKEN" : "OPENAI_API_KEY": key]
          $0.config = type == "anthropic" ? ["ANTHROPIC_BASE_URL": base] : ["OPENAI_BASE_URL": base]
        }
        $0.workspaceScope = .ws("default")
      })
  }

  @Test("set/get/update/delete, verification with the --no-verify hint, bundles for sandboxes only, rotation, no key in events")
  func routes() async throws {
    let server = try FakeOpenAI()
    defer { server.stop() }
    let g = try await ConfigGateway.start()
    defer { Task { await g.stop() } }
    let sandboxID = try await g.withClients { c, inf in
      try await provider(c, "good", key: "sk-good", base: server.baseURL)
      try await provider(c, "badkey", key: "sk-wrong-key-123", base: server.baseURL)
      try await provider(c, "gh", type: "github", key: "ghp-x", base: server.baseURL)

      let set = try await inf.setInferenceRoute(
        .with {
          $0.providerName = "good"; $0.modelID = "m1"; $0.timeoutSecs = 30
        })
      #expect(set.route.name == "inference.local")
      #expect(set.route.version == 1)
      #expect(set.validationPerformed)
      #expect(set.validatedEndpoints.map(\.url) == [server.baseURL + "/models"])
      let again = try await inf.setInferenceRoute(
        .with {
          $0.providerName = "good"; $0.modelID = "m2"
        })
      #expect(again.route.version == 2)
      let got = try await inf.getInferenceRoute(.init())
      #expect(got.route.modelID == "m2")
      #expect(got.route.providerName == "good")

      let failed = await rpcError {
        _ = try await inf.setInferenceRoute(
          .with {
            $0.providerName = "badkey"; $0.modelID = "m1"
          })
      }
      #expect(failed?.code == .failedPrecondition)
      #expect(failed?.message.contains("failed to verify inference endpoint for provider 'badkey' and model 'm1' at '\(server.baseURL)/models'") == true)
      #expect(failed?.message.contains("HTTP 401") == true)
      #expect(failed?.message.contains("--no-verify") == true)
      #expect(failed?.message.contains("sk-wrong-key-123") == false)
      let unreachable = await rpcError {
        _ = try await inf.setInferenceRoute(
          .with {
            $0.providerName = "good"; $0.modelID = "m"; $0.routeName = "sandbox-system"
          })
      }
      #expect(unreachable == nil)
      let sys = try await inf.setInferenceRoute(
        .with {
          $0.providerName = "badkey"; $0.modelID = "small"; $0.routeName = "sandbox-system"; $0.noVerify = true
        })
      #expect(sys.route.name == "sandbox-system")
      #expect(!sys.validationPerformed)
      #expect(!sys.route.verified)

      let unsupported = await rpcError {
        _ = try await inf.setInferenceRoute(
          .with {
            $0.providerName = "gh"; $0.modelID = "m"; $0.noVerify = true
          })
      }
      #expect(unsupported?.code == .invalidArgument)
      #expect(unsupported?.message.contains("(supported: openai, anthropic, nvidia)") == true)
      let err12 = await rpcError {
        _ = try await inf.setInferenceRoute(
          .with {
            $0.providerName = "nope"; $0.modelID = "m"
          })
      }
      #expect(err12?.code == .failedPrecondition)
      let err13 = await rpcError {
        _ = try await inf.setInferenceRoute(
          .with {
            $0.providerName = "good"; $0.modelID = "m"; $0.routeName = "other"
          })
      }
      #expect(err13?.code == .invalidArgument)
      // Bundles carry keys: not for users.
      let err14 = await rpcError { _ = try await inf.getInferenceBundle(.init()) }
      #expect(err14?.code == .permissionDenied)
      return try await c.createSandbox(
        .with {
          $0.name = "inf"; $0.workspaceScope = .ws("default")
        }
      ).sandbox.metadata.id
    }

    let (first, rotated) = try await g.asSandbox(sandboxID) { c, inf in
      let b = try await inf.getInferenceBundle(.init())
      #expect(b.routes.map(\.name) == ["inference.local", "sandbox-system"])
      #expect(b.routes[0].apiKey == "sk-good")
      #expect(b.routes[0].baseURL == server.baseURL)
      #expect(b.routes[0].modelID == "m2")
      #expect(b.routes[0].protocols.contains("openai_chat_completions"))
      #expect(b.routes[0].providerType == "openai")
      #expect(b.revision.count == 16)
      let err15 = await rpcError { _ = try await c.getSandboxConfig(.with { $0.name = "x" }) }
      #expect(err15?.code == .permissionDenied)
      // Push: the watch delivers the current bundle, then the rotated one.
      let started = ContinuousClock.now
      let rotated = try await inf.watchInferenceBundle(.init()) { response in
        var revisions: [String] = []
        for try await bundle in response.messages {
          revisions.append(bundle.revision)
          if revisions.count == 1 {
            // Rotate the provider's key through the operator.
            try await g.withClients { c, _ in
              _ = try await c.updateProvider(
                .with {
                  $0.provider = .with {
                    $0.metadata.name = "good"; $0.credentials = ["OPENAI_API_KEY": "sk-rotated"]
                  }
                  $0.workspaceScope = .ws("default")
                })
            }
          } else {
            #expect(bundle.routes[0].apiKey == "sk-rotated")
            return bundle.revision
          }
        }
        return ""
      }
      #expect(ContinuousClock.now - started < .seconds(3))
      return (b.revision, rotated)
    }
    #expect(!rotated.isEmpty && rotated != first)

    try await g.withClients { c, inf in
      let del1 = try await inf.deleteInferenceRoute(.with { $0.routeName = "sandbox-system" })
      #expect(del1.deleted)
      let del2 = try await inf.deleteInferenceRoute(.with { $0.routeName = "sandbox-system" })
      #expect(del2.deleted == false)
      let nf = await rpcError { _ = try await inf.getInferenceRoute(.with { $0.routeName = "sandbox-system" }) }
      #expect(nf?.code == .notFound)
      #expect(nf?.message.contains("is not configured") == true)
      // A provider that an inference route uses is not deleted under it; --force deletes both, as events.
      let inUse = await rpcError {
        _ = try await c.deleteProvider(
          .with {
            $0.name = "good"; $0.workspaceScope = .ws("default")
          })
      }
      #expect(inUse?.code == .failedPrecondition)
      #expect(inUse?.message.hasPrefix("provider default/good is used by inference route inference.local; ") == true, "\(String(describing: inUse))")
      _ = try await inf.getInferenceRoute(.with { $0.routeName = "inference.local" })
      let forced = try await c.deleteProvider(
        .with {
          $0.name = "good"; $0.workspaceScope = .ws("default")
        }, metadata: [OpenShellService.forceDeleteHeader: "true"])
      #expect(forced.outcome == .completed)
      let gone = await rpcError { _ = try await inf.getInferenceRoute(.with { $0.routeName = "inference.local" }) }
      #expect(gone?.code == .notFound)
    }

    // Every publication is an event, and no event carries a key in plaintext.
    let log = g.gw.running.store.log
    var published: [String] = []
    for seq in 1...log.headSeq {
      guard let r = try log.record(at: seq) else { continue }
      let event = try GatewayEvent.decode(r)
      let text = String(decoding: try event.serializedData(), as: UTF8.self) + event.debugDescription
      for key in ["sk-good", "sk-rotated", "sk-wrong-key-123"] { #expect(!text.contains(key), "record \(seq) (\(r.type)) contains a key") }
      if case .inferenceBundlePublished(let e)? = event.kind { published.append(e.revision) }
    }
    #expect(published.contains(first))
    #expect(published.contains(rotated))
    #expect(await g.gw.running.store.state.inferenceBundleRevision == published.last)
  }
}

@Suite(
  "Policy delivery to a real supervisor", .serialized, .timeLimit(.minutes(3)),
  .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/bwrap"), "needs bubblewrap"))
struct PolicyDeliveryTests {
  /// Polls until revision `version` leaves `pending`; returns the status and how long it took.
  func awaitStatus(_ c: OSClient, _ name: String, _ version: UInt32, timeout: Duration = .seconds(10)) async throws -> (
    Openshell_V1_GetSandboxPolicyStatusResponse, Duration
  ) {
    let started = ContinuousClock.now
    while ContinuousClock.now - started < timeout {
      let s = try await c.policyStatus(name, version)
      if s.revision.status != .pending { return (s, ContinuousClock.now - started) }
      try await Task.sleep(for: .milliseconds(20))
    }
    throw RPCError(code: .deadlineExceeded, message: "revision \(version) still pending")
  }

  @Test("a new revision reaches the running supervisor and comes back loaded or failed within 1 s")
  func pushed() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    let base = try PolicyFixtures.policy(PolicyFixtures.base)
    try await gw.withClient { c in
      _ = try await c.createSandbox(
        .with {
          $0.name = "deliver"; $0.spec = .with { $0.policy = base }; $0.workspaceScope = .ws("default")
        })
      try await c.wait("deliver", .ready)
      // Give the supervisor's start-up fetch a moment, then measure pushes.
      try await Task.sleep(for: .milliseconds(300))
      let v2 = try await c.setPolicy("deliver", try PolicyFixtures.grown())
      let (loaded, t1) = try await awaitStatus(c, "deliver", v2.version)
      #expect(loaded.revision.status == .loaded)
      #expect(t1 < .seconds(1), "loaded after \(t1)")
      #expect(try await c.get("deliver").status.currentPolicyVersion == v2.version)

      let v3 = try await c.setPolicy("deliver", try PolicyFixtures.l7Broken())
      let (failed, t2) = try await awaitStatus(c, "deliver", v3.version)
      #expect(failed.revision.status == .failed)
      #expect(failed.revision.loadError.contains("network_policies.bad.endpoints[0]: rules and access are mutually exclusive"))
      #expect(failed.activeVersion == v2.version)
      #expect(t2 < .seconds(1), "failed after \(t2)")
      #expect(try await c.get("deliver").status.currentPolicyVersion == v2.version)
      // Deleted and stopped before the test returns (the deferred stop may not run before the process
      // exits, which left the sandbox's network namespace behind).
      try await c.deleteAndWait("deliver")
    }
    await gw.stopEverything()
  }
}
