import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import Testing

@testable import Gateway

/// A real gateway (event log, PKI, local compute driver) on 127.0.0.1 in this process.
struct SandboxGateway {
  let dataDirectory: String
  let port: Int
  let running: RunningGateway
  let task: Task<Void, any Error>

  /// - Parameter configure: adjusts the configuration (e.g. the test-only `simulateNoLandlock`).
  static func start(
    dataDirectory: String? = nil, port: Int = 0, configure: (inout GatewayConfiguration) -> Void = { _ in }
  ) async throws -> SandboxGateway {
    let dir = try dataDirectory ?? GatewayTestSupport.temporaryDirectory("sbx")
    var c = GatewayConfiguration(dataDirectory: dir)
    c.port = port
    c.handleSignals = false
    c.shutdownGracePeriod = .seconds(2)
    configure(&c)
    let box = Box()
    let task = Task { try await serve(c) { running, port in box.set(running, port) } }
    for _ in 0..<1000 {
      if let (r, p) = box.get() { return SandboxGateway(dataDirectory: dir, port: p, running: r, task: task) }
      try await Task.sleep(for: .milliseconds(10))
    }
    task.cancel()
    throw RPCError(code: .unavailable, message: "gateway did not start")
  }

  func stop() async {
    running.shutdown()
    _ = try? await task.value
  }

  /// Stops the gateway and every sandbox process it runs (sandboxes outlive a gateway by design).
  func stopEverything() async {
    await running.driver?.stopAll()
    await stop()
  }

  var pki: GatewayPKI { running.pki! }

  func withClient<R: Sendable>(
    cert: String? = nil, key: String? = nil,
    _ body: @Sendable (Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>) async throws -> R
  ) async throws -> R {
    try await Self.withClient(
      port: port, ca: pki.caCertificatePath, cert: cert ?? pki.clientCertificatePath, key: key ?? pki.clientKeyPath, body)
  }

  /// A client of a gateway on 127.0.0.1:`port` (in this process or not) with the certificate `cert`/`key`,
  /// trusting only `ca`.
  static func withClient<R: Sendable>(
    port: Int, ca: String, cert: String, key: String,
    _ body: @Sendable (Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>) async throws -> R
  ) async throws -> R {
    let security = HTTP2ClientTransport.Posix.TransportSecurity.mTLS(
      certificateChain: [.file(path: cert, format: .pem)], privateKey: .file(path: key, format: .pem)
    ) { $0.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
    let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: security)
    return try await withGRPCClient(transport: transport) { client in
      try await body(Openshell_V1_OpenShell.Client(wrapping: client))
    }
  }

  /// Writes a certificate for `sandboxID` to files; returns (cert, key).
  func sandboxCertificate(_ sandboxID: String) throws -> (String, String) {
    let issued = try pki.issueSandboxCertificate(sandboxID: sandboxID)
    let dir = try GatewayTestSupport.temporaryDirectory("sbxcert")
    try issued.certificatePEM.write(toFile: dir + "/c.pem", atomically: true, encoding: .utf8)
    try issued.privateKeyPEM.write(toFile: dir + "/k.pem", atomically: true, encoding: .utf8)
    return (dir + "/c.pem", dir + "/k.pem")
  }

  final class Box: @unchecked Sendable {
    private let lock = NSLock()
    private var value: (RunningGateway, Int)?
    func set(_ r: RunningGateway, _ p: Int) { lock.lock(); value = (r, p); lock.unlock() }
    func get() -> (RunningGateway, Int)? { lock.lock(); defer { lock.unlock() }; return value }
  }
}

typealias OSClient = Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>

extension Openshell_V1_OpenShell.Client where Transport == HTTP2ClientTransport.Posix {
  func create(_ name: String = "", command: [String] = [], env: [String: String] = [:]) async throws -> Openshell_V1_Sandbox {
    try await createSandbox(
      .with {
        $0.name = name
        $0.spec = .with {
          $0.command = command; $0.environment = env
        }
        $0.workspaceScope = .with { $0.workspace = "default" }
      }
    ).sandbox
  }

  func get(_ name: String) async throws -> Openshell_V1_Sandbox {
    try await getSandbox(
      .with {
        $0.name = name; $0.workspaceScope = .with { $0.workspace = "default" }
      }
    ).sandbox
  }

  /// Polls until the phase is `phase` (fails on timeout).
  @discardableResult
  func wait(_ name: String, _ phase: Openshell_V1_SandboxPhase, timeout: Duration = .seconds(30)) async throws -> Openshell_V1_Sandbox {
    let deadline = ContinuousClock.now + timeout
    var last: Openshell_V1_Sandbox?
    while ContinuousClock.now < deadline {
      let s = try await get(name)
      if s.status.phase == phase { return s }
      last = s
      try await Task.sleep(for: .milliseconds(50))
    }
    // One line (CI prints only the lines of a failure that carry its mark): the phase, the conditions and the
    // gateway's last log lines for the sandbox.
    let conditions = (last?.status.conditions ?? []).map { "\($0.type)=\($0.status) \($0.reason): \($0.message)" }
    let logs =
      (try? await getSandboxLogs(
        .with {
          $0.sandbox = name; $0.workspaceScope = .with { $0.workspace = "default" }
        }
      ).logs.suffix(6).map(\.message)) ?? []
    throw RPCError(
      code: .deadlineExceeded,
      message: "sandbox \(name) not \(phase) in time: phase \(String(describing: last?.status.phase)); conditions \(conditions); logs \(logs)"
        .replacingOccurrences(of: "\n", with: " | "))
  }

  struct ExecResult: Sendable {
    var stdout = Data()
    var stderr = Data()
    var exitCode: Int32?
    var events: [(Duration, String)] = []
    var out: String { String(decoding: stdout, as: UTF8.self) }
    var err: String { String(decoding: stderr, as: UTF8.self) }
  }

  func exec(_ name: String, _ command: [String], stdin: Data = Data(), timeout: Int64? = nil, env: [String: String] = [:], workdir: String = "") async throws
    -> ExecResult
  {
    let request = Openshell_V1_ExecSandboxRequest.with {
      $0.sandbox = name
      $0.command = command
      $0.stdin = stdin
      $0.environment = env
      $0.workdir = workdir
      $0.workspaceScope = .with { $0.workspace = "default" }
      if let timeout { $0.executionTimeout = .init(seconds: timeout) }
    }
    let started = ContinuousClock.now
    return try await execSandbox(request) { response in
      var r = ExecResult()
      for try await event in response.messages {
        switch event.payload {
        case .stdout(let o): r.stdout.append(o.data); r.events.append((ContinuousClock.now - started, "stdout"))
        case .stderr(let e): r.stderr.append(e.data); r.events.append((ContinuousClock.now - started, "stderr"))
        case .exit(let x): r.exitCode = x.exitCode; r.events.append((ContinuousClock.now - started, "exit"))
        case nil: break
        }
      }
      return r
    }
  }

  func delete(_ name: String) async throws -> Openshell_V1_DeleteSandboxResponse {
    try await deleteSandbox(
      .with {
        $0.name = name; $0.workspaceScope = .with { $0.workspace = "default" }
      })
  }

  /// Deletes and waits until GetSandbox says NOT_FOUND.
  func deleteAndWait(_ name: String, timeout: Duration = .seconds(30)) async throws {
    _ = try await delete(name)
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      do { _ = try await get(name) } catch let e as RPCError where e.code == .notFound { return }
      try await Task.sleep(for: .milliseconds(50))
    }
    throw RPCError(code: .deadlineExceeded, message: "sandbox \(name) not deleted in time")
  }
}
