import Crypto
import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import Synchronization

/// Gateway-wide settings of the SSH tunnel endpoint (issue 11).
public final class SSHTunnelSettings: Sendable {
  /// Lifetime of a new SSH session token in seconds; 0 = the token never expires. OpenShell's default
  /// is 24 h (`ssh_session_ttl_secs`, enforcement-and-ssh.md §1.5 step 1). Set by
  /// `openshell gateway serve --ssh-session-ttl SECONDS`.
  public let sessionTTLSeconds: Int64
  private let endpoint = Mutex<(host: String, port: UInt32, scheme: String)?>(nil)
  /// Open tunnels per session and per sandbox.
  private let open = Mutex<(sessions: [String: Int], sandboxes: [String: Int])>(([:], [:]))
  /// At most this many tunnels at once per session token and per sandbox (OpenShell's limits:
  /// 3 and 20, enforcement-and-ssh.md §1.5; upstream `acquire_ssh_connection_slots`).
  public static let maxTunnelsPerSession = 3
  /// At most this many tunnels at once per sandbox (OpenShell: 20, enforcement-and-ssh.md §1.5).
  public static let maxTunnelsPerSandbox = 20

  /// Settings with this token lifetime in seconds (default 86,400 = 24 h; negative values count as 0, never
  /// expiring).
  public init(sessionTTLSeconds: Int64 = 86_400) { self.sessionTTLSeconds = max(0, sessionTTLSeconds) }

  /// Where clients reach the gateway (filled in once the server listens): returned by CreateSshSession.
  public func setEndpoint(host: String, port: Int, scheme: String) { endpoint.withLock { $0 = (host, UInt32(port), scheme) } }
  var currentEndpoint: (host: String, port: UInt32, scheme: String)? { endpoint.withLock { $0 } }

  /// Takes a tunnel slot. - Throws: RESOURCE_EXHAUSTED naming which limit was reached.
  func acquireTunnel(session: String, sandbox: String) throws {
    try open.withLock { o in
      if o.sessions[session, default: 0] >= Self.maxTunnelsPerSession {
        throw RPCError(
          code: .resourceExhausted, message: "ssh session \(session) already has \(Self.maxTunnelsPerSession) open tunnels (the limit per session)")
      }
      if o.sandboxes[sandbox, default: 0] >= Self.maxTunnelsPerSandbox {
        throw RPCError(code: .resourceExhausted, message: "sandbox \(sandbox) already has \(Self.maxTunnelsPerSandbox) open tunnels (the limit per sandbox)")
      }
      o.sessions[session, default: 0] += 1
      o.sandboxes[sandbox, default: 0] += 1
    }
  }

  func releaseTunnel(session: String, sandbox: String) {
    open.withLock { o in
      o.sessions[session, default: 1] -= 1
      if o.sessions[session] == 0 { o.sessions[session] = nil }
      o.sandboxes[sandbox, default: 1] -= 1
      if o.sandboxes[sandbox] == 0 { o.sandboxes[sandbox] = nil }
    }
  }
}

/// SSH session tokens: what CreateSshSession hands out and what ForwardTcp accepts.
///
/// A token is 32 random bytes (base64url, 43 characters). Only its SHA-256 (hex) is stored, in the
/// `ssh.session_created` event and so in the projection (`GatewayState.sshSessions`): the log, the
/// audit and the snapshots never hold a usable token. Revocation is an `ssh.session_revoked` event,
/// expiry a timestamp in the creation event, so both survive a gateway restart.
enum SSHSessionToken {
  static func make() -> String {
    var g = SystemRandomNumberGenerator()
    var bytes = [UInt8]()
    for _ in 0..<4 {
      let v = g.next()
      for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }
    return Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
      .replacingOccurrences(of: "=", with: "")
  }

  static func hash(_ token: String) -> String {
    SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
  }

  /// The session a token belongs to, checked for use against `sandboxID` at `nowNs`.
  /// - Throws: UNAUTHENTICATED (no token, unknown token, expired), PERMISSION_DENIED (revoked, or a
  ///   token of another sandbox). The messages say which; none contains the token.
  static func authorize(_ token: String, sandboxID: String, state: GatewayState, nowNs: Int64) throws -> SshSessionRecord {
    guard !token.isEmpty else {
      throw RPCError(code: .unauthenticated, message: "ForwardTcp: authorization_token is required (create one with CreateSshSession)")
    }
    let digest = hash(token)
    guard let session = state.sshSessions.values.first(where: { $0.tokenSHA256 == digest }) else {
      throw RPCError(code: .unauthenticated, message: "ssh session token is not valid: no such session")
    }
    if session.revoked { throw RPCError(code: .permissionDenied, message: "ssh session \(session.id) was revoked") }
    if session.expiresNs > 0, nowNs >= session.expiresNs {
      throw RPCError(code: .unauthenticated, message: "ssh session \(session.id) expired at \(iso(session.expiresNs))")
    }
    guard session.sandboxID == sandboxID else {
      throw RPCError(code: .permissionDenied, message: "ssh session \(session.id) was issued for another sandbox")
    }
    return session
  }

  static func iso(_ ns: Int64) -> String { Date(timeIntervalSince1970: Double(ns) / 1e9).formatted(.iso8601) }
  static func nowNs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1e9) }
}

extension OpenShellService {
  /// CreateSshSession: a token for `sandbox` (a name in `workspace_scope`, or its id) that ForwardTcp
  /// accepts until it expires (``SSHTunnelSettings/sessionTTLSeconds``) or is revoked. The sandbox must
  /// be READY (FAILED_PRECONDITION otherwise). Appends `ssh.session_created` (token hash only).
  /// Returns the token once, the gateway address and the sandbox's SSH host key fingerprint.
  public func createSshSession(request: Openshell_V1_CreateSshSessionRequest, context: ServerContext) async throws -> Openshell_V1_CreateSshSessionResponse {
    let caller = try userCaller("CreateSshSession")
    guard !request.sandbox.isEmpty else { throw RPCErrors.invalidArgument(field: "sandbox", "is required") }
    let state = await store.state
    let ws = try workspace(request.workspaceScope, state)
    guard let sandbox = state.sandbox(named: request.sandbox, workspace: ws) ?? state.sandboxes[request.sandbox].flatMap({ $0.workspace == ws ? $0 : nil })
    else {
      throw RPCErrors.notFound("sandbox \(ws)/\(request.sandbox)")
    }
    guard sandbox.phase == .ready else {
      throw RPCErrors.failedPrecondition("sandbox \(ws)/\(sandbox.name) is not ready (phase \(sandbox.phase.name.lowercased()))")
    }
    let fingerprint = (driver as? LocalComputeDriver)?.sshHostKeyFingerprint(sandboxID: sandbox.id) ?? ""
    guard !fingerprint.isEmpty else {
      throw RPCErrors.failedPrecondition("sandbox \(ws)/\(sandbox.name) has no SSH host key (it was started by an older gateway: stop and start it)")
    }
    let token = SSHSessionToken.make()
    let id = RandomID.uuid()
    let ttl = ssh.sessionTTLSeconds
    let expires = ttl == 0 ? Int64(0) : SSHSessionToken.nowNs() + ttl * 1_000_000_000
    _ = try await store.execute(actor: caller.actor, requestID: "") { state in
      guard state.sandboxes[sandbox.id] != nil else { throw RPCErrors.notFound("sandbox \(ws)/\(sandbox.name)") }
      return Decision(events: [
        GatewayEvent(
          .sshSessionCreated(
            .with {
              $0.id = id; $0.sandboxID = sandbox.id; $0.tokenSha256 = SSHSessionToken.hash(token); $0.expiresNs = expires
              $0.hostKeyFingerprint = fingerprint
            }))
      ])
    }
    hub?.logs.gateway(sandbox.id, "ssh session \(id) created by \(caller.actor)")
    return .with {
      $0.sandboxID = sandbox.id
      $0.token = token
      $0.hostKeyFingerprint = fingerprint
      if let e = ssh.currentEndpoint { $0.gatewayHost = e.host; $0.gatewayPort = e.port; $0.gatewayScheme = e.scheme }
      if expires > 0 { $0.expirationTime = .init(date: Date(timeIntervalSince1970: Double(expires) / 1e9)) }
    }
  }

  /// RevokeSshSession: appends `ssh.session_revoked` for the session of `token`; an unknown token is
  /// NOT_FOUND unless `allow_missing` (then ALREADY_ABSENT), an already revoked one ALREADY_ABSENT.
  /// Tunnels already open stay open (as OpenShell); new ForwardTcp calls are refused.
  public func revokeSshSession(request: Openshell_V1_RevokeSshSessionRequest, context: ServerContext) async throws -> Openshell_V1_RevokeSshSessionResponse {
    let caller = try userCaller("RevokeSshSession")
    guard !request.token.isEmpty else { throw RPCErrors.invalidArgument(field: "token", "is required") }
    let digest = SSHSessionToken.hash(request.token)
    let result = try await store.execute(actor: caller.actor, requestID: "") { state in
      guard let session = state.sshSessions.values.first(where: { $0.tokenSHA256 == digest }) else {
        if request.allowMissing { return Decision(events: []) }
        throw RPCErrors.notFound("ssh session for this token")
      }
      if session.revoked { return Decision(events: []) }
      return Decision(events: [GatewayEvent(.sshSessionRevoked(.with { $0.id = session.id }))])
    }
    return .with { $0.outcome = result.decision.events.isEmpty ? .alreadyAbsent : .completed }
  }
}
