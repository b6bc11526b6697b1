import EventLog
import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import Testing

@testable import Gateway

/// The SSH tunnel endpoint at the gRPC level (issue 11): session tokens against a real sandbox whose
/// real `sshd` answers through ForwardTcp → RelayOpen → RelayStream. Serialized with the other
/// local-driver tests.
extension SandboxLifecycleTests {
  /// Opens ForwardTcp with `token` and returns the first line the far end sends (the SSH server's
  /// version line), or throws the gateway's RPCError.
  static func sshBanner(_ c: OSClient, sandbox: String, token: String) async throws -> String {
    try await c.forwardTcp(
      request: StreamingClientRequest { writer in
        try await writer.write(
          .with {
            $0.init_p = .with {
              $0.sandbox = sandbox; $0.ssh = .init(); $0.authorizationToken = token
            }
          })
        // The client's own version line, then the tunnel stays open until the answer is read.
        try await writer.write(.with { $0.data = Data("SSH-2.0-OpenShellTest\r\n".utf8) })
        try await Task.sleep(for: .seconds(10))
      }
    ) { response in
      var bytes = Data()
      for try await frame in response.messages {
        if case .data(let d)? = frame.payload { bytes.append(d) }
        if let nl = bytes.firstIndex(of: 0x0a) { return String(decoding: bytes[..<nl], as: UTF8.self) }
      }
      return String(decoding: bytes, as: UTF8.self)
    }
  }

  static func session(_ c: OSClient, _ name: String) async throws -> Openshell_V1_CreateSshSessionResponse {
    try await c.createSshSession(
      .with {
        $0.sandbox = name; $0.workspaceScope = .with { $0.workspace = "default" }
      })
  }

  static func refusal(_ c: OSClient, sandbox: String, token: String) async -> RPCError? {
    do {
      _ = try await sshBanner(c, sandbox: sandbox, token: token)
      return nil
    } catch let e as RPCError { return e } catch { return RPCError(code: .unknown, message: "\(error)") }
  }

  @Test("ssh: tokens — valid reaches sshd, revoked/unknown/expired refused with the right status, state survives a restart, not-ready refused")
  func sshTokens() async throws {
    let dir = try GatewayTestSupport.temporaryDirectory("ssh")
    var gw = try await SandboxGateway.start(dataDirectory: dir) { $0.sshSessionTTLSeconds = 0 }
    let current = GatewayBox(gw)  // the gateway running now, stopped with its sandboxes whatever happens
    defer { Task { await current.value.stopEverything() } }
    let port = gw.port
    let (sandboxID, valid, revoked) = try await gw.withClient { c in
      let s = try await c.create("ssh-tok")
      try await c.wait("ssh-tok", .ready)
      let valid = try await Self.session(c, "ssh-tok")
      #expect(valid.sandboxID == s.metadata.id)
      #expect(valid.hostKeyFingerprint.hasPrefix("SHA256:") && valid.hostKeyFingerprint.count == 50, "\(valid.hostKeyFingerprint)")
      #expect(!valid.hasExpirationTime, "TTL 0: no expiry")
      #expect(valid.gatewayPort == UInt32(port) && valid.gatewayScheme == "https")
      let banner = try await Self.sshBanner(c, sandbox: s.metadata.id, token: valid.token)
      #expect(banner.hasPrefix("SSH-2.0-OpenSSH"), "\(banner)")
      // By name works as well.
      #expect(try await Self.sshBanner(c, sandbox: "ssh-tok", token: valid.token).hasPrefix("SSH-2.0-OpenSSH"))

      // At most 3 tunnels per session at once: a 4th is RESOURCE_EXHAUSTED; a slot frees when one closes.
      // (A tunnel's slot is freed when the gateway has finished with it, a moment after the client.)
      let established = Counter()
      let holders = (0..<3).map { _ in
        Task {
          while true {
            do {
              try await c.forwardTcp(
                request: StreamingClientRequest { writer in
                  try await writer.write(
                    .with {
                      $0.init_p = .with {
                        $0.sandbox = s.metadata.id; $0.ssh = .init(); $0.authorizationToken = valid.token
                      }
                    })
                  try await Task.sleep(for: .seconds(30))
                }
              ) { response in
                var counted = false
                for try await _ in response.messages where !counted {
                  counted = true
                  established.add()  // the SSH server's first bytes arrived: the tunnel is open
                }
              }
              return
            } catch let e as RPCError where e.code == .resourceExhausted {
              try await Task.sleep(for: .milliseconds(100))
            }
          }
        }
      }
      for _ in 0..<200 where established.value < 3 { try await Task.sleep(for: .milliseconds(50)) }
      #expect(established.value == 3)
      let full = await Self.refusal(c, sandbox: s.metadata.id, token: valid.token)
      #expect(full?.code == .resourceExhausted && full?.message.contains("per session") == true, "\(String(describing: full))")
      for h in holders { h.cancel() }
      var reopened = false
      for _ in 0..<50 where !reopened {
        reopened = (try? await Self.sshBanner(c, sandbox: s.metadata.id, token: valid.token))?.hasPrefix("SSH-2.0-OpenSSH") == true
        if !reopened { try await Task.sleep(for: .milliseconds(100)) }
      }
      #expect(reopened)

      let revoked = try await Self.session(c, "ssh-tok")
      let r = try await c.revokeSshSession(.with { $0.token = revoked.token })
      #expect(r.outcome == .completed)
      #expect(try await c.revokeSshSession(.with { $0.token = revoked.token }).outcome == .alreadyAbsent)
      await #expect(throws: RPCError.self) { try await c.revokeSshSession(.with { $0.token = "nope" }) }
      #expect(
        try await c.revokeSshSession(
          .with {
            $0.token = "nope"; $0.allowMissing = true
          }
        ).outcome == .alreadyAbsent)

      let e1 = await Self.refusal(c, sandbox: s.metadata.id, token: revoked.token)
      #expect(e1?.code == .permissionDenied && e1?.message.contains("revoked") == true, "\(String(describing: e1))")
      let e2 = await Self.refusal(c, sandbox: s.metadata.id, token: "not-a-token")
      #expect(e2?.code == .unauthenticated && e2?.message.contains("not valid") == true, "\(String(describing: e2))")
      let e3 = await Self.refusal(c, sandbox: s.metadata.id, token: "")
      #expect(e3?.code == .unauthenticated, "\(String(describing: e3))")
      return (s.metadata.id, valid.token, revoked.token)
    }

    // The log holds hashes only; open/close of each tunnel is recorded with byte counts.
    let records = try gw.running.store.log.records(from: 1)
    var created = 0
    var closed: [Openshell_Events_V1_SshTunnelClosed] = []
    for record in records {
      #expect(Data(record.payload).range(of: Data(valid.utf8)) == nil && Data(record.payload).range(of: Data(revoked.utf8)) == nil)
      let event = try GatewayEvent.decode(record)
      if case .sshSessionCreated(let e)? = event.kind {
        created += 1
        #expect(e.tokenSha256.count == 64 && e.sandboxID == sandboxID && e.expiresNs == 0)
      }
      if case .sshTunnelClosed(let e)? = event.kind { closed.append(e) }
    }
    #expect(created == 2)
    #expect(closed.count == 6, "one per tunnel that opened: \(closed.count)")
    #expect(closed.filter { $0.bytesToSandbox == 23 }.count == 3, "\(closed)")
    #expect(closed.allSatisfy { $0.bytesFromSandbox >= 20 && $0.sandboxID == sandboxID }, "\(closed)")

    // Restart (sandboxes keep running) with a 2 s TTL: the valid token still works, the revoked one
    // stays refused; a new token expires.
    await gw.stop()
    gw = try await SandboxGateway.start(dataDirectory: dir) { $0.sshSessionTTLSeconds = 2 }
    current.value = gw
    let restarted = gw
    try await gw.withClient { c in
      _ = try await c.wait("ssh-tok", .ready)
      let banner = try await Self.sshBanner(c, sandbox: sandboxID, token: valid)
      #expect(banner.hasPrefix("SSH-2.0-OpenSSH"), "\(banner)")
      let e1 = await Self.refusal(c, sandbox: sandboxID, token: revoked)
      #expect(e1?.code == .permissionDenied, "\(String(describing: e1))")

      let short = try await Self.session(c, "ssh-tok")
      #expect(short.hasExpirationTime)
      // A tunnel open when its session expires is ended by the gateway (the client would keep it 10 s).
      let opened = ContinuousClock.now
      let banner2 = try await c.forwardTcp(
        request: StreamingClientRequest { writer in
          try await writer.write(
            .with {
              $0.init_p = .with {
                $0.sandbox = sandboxID; $0.ssh = .init(); $0.authorizationToken = short.token
              }
            })
          try await writer.write(.with { $0.data = Data("SSH-2.0-OpenShellTest\r\n".utf8) })
          try await Task.sleep(for: .seconds(10))
        }
      ) { response in
        var bytes = Data()
        for try await frame in response.messages { if case .data(let d)? = frame.payload { bytes.append(d) } }
        return String(decoding: bytes, as: UTF8.self)
      }
      #expect(banner2.hasPrefix("SSH-2.0-OpenSSH"), "\(banner2)")
      #expect(ContinuousClock.now - opened < .seconds(8), "the expired session's tunnel was ended")
      let reasons = try restarted.running.store.log.records(from: 1, filter: EventFilter(types: ["ssh.tunnel_closed"])).compactMap { r -> String? in
        if case .sshTunnelClosed(let e)? = try GatewayEvent.decode(r).kind { return e.reason } else { return nil }
      }
      #expect(reasons.last == "session expired", "\(reasons)")
      let e2 = await Self.refusal(c, sandbox: sandboxID, token: short.token)
      #expect(e2?.code == .unauthenticated && e2?.message.contains("expired") == true, "\(String(describing: e2))")

      // Not ready → FAILED_PRECONDITION (the token itself is still valid).
      _ = try await c.stopSandbox(
        .with {
          $0.name = "ssh-tok"; $0.workspaceScope = .with { $0.workspace = "default" }
        })
      _ = try await c.wait("ssh-tok", .stopped)
      let e3 = await Self.refusal(c, sandbox: sandboxID, token: valid)
      #expect(e3?.code == .failedPrecondition, "\(String(describing: e3))")
      await #expect(throws: RPCError.self) { try await Self.session(c, "ssh-tok") }
      try await c.deleteAndWait("ssh-tok")
    }
    await gw.stopEverything()
  }

  @Test("ssh: a token is bound to its sandbox (pure check)")
  func sshTokenSandboxBinding() throws {
    var state = GatewayState()
    let token = SSHSessionToken.make()
    #expect(token.count == 43)
    state.sshSessions["s1"] = SshSessionRecord(id: "s1", sandboxID: "A", tokenSHA256: SSHSessionToken.hash(token), expiresNs: 0, revoked: false)
    #expect(try SSHSessionToken.authorize(token, sandboxID: "A", state: state, nowNs: 1).id == "s1")
    #expect(throws: RPCError.self) { try SSHSessionToken.authorize(token, sandboxID: "B", state: state, nowNs: 1) }
    do {
      _ = try SSHSessionToken.authorize(token, sandboxID: "B", state: state, nowNs: 1)
    } catch let e as RPCError {
      #expect(e.code == .permissionDenied && e.message.contains("another sandbox") && !e.message.contains(token))
    }
    state.sshSessions["s1"]?.expiresNs = 100
    #expect(try SSHSessionToken.authorize(token, sandboxID: "A", state: state, nowNs: 99).id == "s1")
    #expect(throws: RPCError.self) { try SSHSessionToken.authorize(token, sandboxID: "A", state: state, nowNs: 100) }
  }
}

/// A counter shared between test tasks.
final class Counter: @unchecked Sendable {
  private let lock = NSLock()
  private var n = 0
  func add() { lock.lock(); n += 1; lock.unlock() }
  var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}

/// The gateway a test runs now (it is replaced by a restart).
final class GatewayBox: @unchecked Sendable {
  private let lock = NSLock()
  private var gateway: SandboxGateway
  init(_ g: SandboxGateway) { gateway = g }
  var value: SandboxGateway {
    get { lock.lock(); defer { lock.unlock() }; return gateway }
    set { lock.lock(); gateway = newValue; lock.unlock() }
  }
}
