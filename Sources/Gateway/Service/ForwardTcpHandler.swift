import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import SandboxProtocol
import Synchronization

extension OpenShellService {
  /// ForwardTcp: a byte tunnel to a sandbox's SSH server (or a TCP port on its loopback) through its supervisor (OpenShell:
  /// enforcement-and-ssh.md §1.5 steps 3–4). The first frame is `init` with `sandbox` (the sandbox id,
  /// or a name in `workspace`), `target.ssh` and `authorization_token` (from CreateSshSession); every
  /// later frame is `data`. The gateway checks the caller (a user, never a sandbox identity), the
  /// token (``SSHSessionToken/authorize(_:sandboxID:state:nowNs:)``: UNAUTHENTICATED unknown/expired,
  /// PERMISSION_DENIED revoked/other sandbox) and that the sandbox is READY (FAILED_PRECONDITION),
  /// then opens a relay channel (`RelayOpen{service_id: "ssh", target: ssh}` → the supervisor dials
  /// `RelayStream`) and copies bytes both ways until either side ends. `ssh.tunnel_opened` and
  /// `ssh.tunnel_closed` (bytes each way, duration) are appended to the log. At most 3 tunnels per
  /// session and 20 per sandbox are open at once (RESOURCE_EXHAUSTED beyond).
  /// `target.tcp{host, port}` forwards to 127.0.0.1:`port` inside the sandbox's network namespace with the
  /// same token and checks (``relayTarget(_:)``: INVALID_ARGUMENT for a port outside 1-65535 or a host
  /// that is not loopback); nothing listening there is UNAVAILABLE naming the port.
  public func forwardTcp(
    request: RPCAsyncSequence<Openshell_V1_TcpForwardFrame, any Error>, response: RPCWriter<Openshell_V1_TcpForwardFrame>, context: ServerContext
  ) async throws {
    let caller = try userCaller("ForwardTcp")
    let hub = try requireHub("ForwardTcp")
    var iterator = request.makeAsyncIterator()
    guard let first = try await iterator.next(), case .init_p(let initFrame)? = first.payload else {
      throw RPCErrors.invalidArgument(field: "init", "the first ForwardTcp frame must be init")
    }
    let target = try Self.relayTarget(initFrame.target)
    guard !initFrame.sandbox.isEmpty else { throw RPCErrors.invalidArgument(field: "init.sandbox", "is required") }
    let state = await store.state
    let ws = initFrame.workspace.isEmpty ? GatewayState.defaultWorkspace : initFrame.workspace
    guard let sandbox = state.sandboxes[initFrame.sandbox] ?? state.sandbox(named: initFrame.sandbox, workspace: ws) else {
      // The token is checked first only when it can name a sandbox; an unknown sandbox says nothing more.
      throw RPCErrors.notFound("sandbox \(initFrame.sandbox)")
    }
    let session = try SSHSessionToken.authorize(initFrame.authorizationToken, sandboxID: sandbox.id, state: state, nowNs: SSHSessionToken.nowNs())
    guard sandbox.phase == .ready else {
      throw RPCErrors.failedPrecondition("sandbox \(sandbox.workspace)/\(sandbox.name) is not ready (phase \(sandbox.phase.name.lowercased()))")
    }
    try ssh.acquireTunnel(session: session.id, sandbox: sandbox.id)
    defer { ssh.releaseTunnel(session: session.id, sandbox: sandbox.id) }
    let channel: SupervisorHub.RelayChannel
    do {
      channel = try await hub.openRelay(sandboxID: sandbox.id, service: target.service, target: target.relay, flowControl: true)
    } catch let e as RPCError where e.code == .unavailable && e.message.contains("refused relay") {
      // The supervisor could not connect to the port (RelayOpenResult): nothing listens there.
      throw RPCError(code: .unavailable, message: "ForwardTcp \(target.name) in sandbox \(sandbox.workspace)/\(sandbox.name): \(e.message)")
    }
    let tunnelID = RandomID.uuid()
    _ = try await store.execute(actor: caller.actor, requestID: "") { _ in
      Decision(events: [
        GatewayEvent(
          .sshTunnelOpened(
            .with {
              $0.tunnelID = tunnelID; $0.sessionID = session.id; $0.sandboxID = sandbox.id; $0.target = target.name
            }))
      ])
    }
    let started = ContinuousClock.now
    let counter = ByteCounter()
    var reason = ""
    // A revoked or expired session ends its open tunnels too (checked every second), not only new ones.
    let ended = SessionEnd()
    let store = self.store
    let watcher = Task {
      while !Task.isCancelled {
        try? await Task.sleep(for: .seconds(1))
        let current = await store.state.sshSessions[session.id]
        let why: String? =
          current == nil || current!.revoked
          ? "session revoked"
          : (current!.expiresNs > 0 && SSHSessionToken.nowNs() >= current!.expiresNs) ? "session expired" : nil
        if let why, !Task.isCancelled {
          ended.set(why)
          channel.cancel()
          return
        }
      }
    }
    defer { watcher.cancel() }
    do {
      try await withRPCCancellationHandler {
        try await Self.pump(IteratorTransfer(iterator), channel: channel, response: response, counter: counter)
      } onCancelRPC: {
        channel.cancel()
      }
    } catch is CancellationError {
      reason = "closed by the client"
    } catch {
      reason = "\(error)"
    }
    channel.finish()
    if let why = ended.value { reason = why }
    let duration = ContinuousClock.now - started
    let closed = GatewayEvent(
      .sshTunnelClosed(
        .with {
          $0.tunnelID = tunnelID; $0.sessionID = session.id; $0.sandboxID = sandbox.id
          $0.bytesToSandbox = counter.up; $0.bytesFromSandbox = counter.down
          $0.durationMs = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
          $0.reason = String(reason.prefix(500))
        }))
    _ = try? await store.execute(actor: caller.actor, requestID: "") { _ in Decision(events: [closed]) }
  }

  /// Where a ForwardTcp tunnel goes: the relay's service id and target, and the audit name
  /// (`ssh` | `tcp:127.0.0.1:<port>`).
  struct ForwardTarget {
    let service: String
    let relay: Openshell_V1_RelayOpen.OneOf_Target
    let name: String
  }

  /// Validates `init.target`: `ssh`, or `tcp` to a port on the sandbox's own loopback (host empty,
  /// `127.0.0.1` or `localhost`; the contract's phase 1 is loopback only, and the supervisor dials IPv4
  /// loopback inside the sandbox's network namespace). - Throws: INVALID_ARGUMENT naming the field.
  static func relayTarget(_ target: Openshell_V1_TcpForwardInit.OneOf_Target?) throws -> ForwardTarget {
    switch target {
    case .ssh?:
      return ForwardTarget(service: SandboxProtocol.sshService, relay: .ssh(.init()), name: "ssh")
    case .tcp(let t)?:
      guard (1...65535).contains(t.port) else {
        throw RPCErrors.invalidArgument(field: "init.tcp.port", "must be 1-65535, got \(t.port)")
      }
      guard ["", "127.0.0.1", "localhost"].contains(t.host.lowercased()) else {
        throw RPCErrors.invalidArgument(
          field: "init.tcp.host",
          "only the sandbox's own loopback can be forwarded to (127.0.0.1 or localhost), not \(String(t.host.prefix(100)).debugDescription)")
      }
      return ForwardTarget(
        service: SandboxProtocol.tcpForwardService,
        relay: .tcp(
          .with {
            $0.host = "127.0.0.1"; $0.port = t.port
          }), name: "tcp:127.0.0.1:\(t.port)")
    case nil:
      throw RPCErrors.invalidArgument(field: "init.target", "is required (ssh or tcp)")
    }
  }

  /// Copies client `data` frames to the channel and the channel's bytes to the client until the
  /// sandbox side ends (normal end) or the client ends its stream (the channel is then cancelled,
  /// which ends the relay and the supervisor's SSH server).
  static func pump(
    _ frames: IteratorTransfer<RPCAsyncSequence<Openshell_V1_TcpForwardFrame, any Error>.AsyncIterator>,
    channel: SupervisorHub.RelayChannel, response: RPCWriter<Openshell_V1_TcpForwardFrame>,
    counter: ByteCounter
  ) async throws {
    let clientDone = SharedFlag()
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        var frames = frames.iterator
        defer {
          clientDone.set()
          channel.cancel()
        }
        while let frame = try await frames.next() {
          guard case .data(let d)? = frame.payload else {
            throw RPCErrors.invalidArgument(field: "data", "only data frames may follow init")
          }
          counter.addUp(d.count)
          if !d.isEmpty { await channel.sendWaiting(d) }
        }
      }
      do {
        for try await data in channel.incoming {
          counter.addDown(data.count)
          try await response.write(.with { $0.data = data })
          channel.consumed(data.count)
        }
      } catch is CancellationError where clientDone.isSet {
        throw CancellationError()  // the client closed its side first
      }
      group.cancelAll()
      // A client that broke the protocol is reported; its task's other errors (the stream was cut
      // because we returned) are not.
      while let next = await group.nextResult() {
        if case .failure(let e as RPCError) = next, e.code == .invalidArgument { throw e }
      }
    }
  }
}

/// Byte counts of one tunnel (client → sandbox, sandbox → client).
final class ByteCounter: Sendable {
  private let counts = Mutex<(up: UInt64, down: UInt64)>((0, 0))
  func addUp(_ n: Int) { counts.withLock { $0.up += UInt64(n) } }
  func addDown(_ n: Int) { counts.withLock { $0.down += UInt64(n) } }
  var up: UInt64 { counts.withLock { $0.up } }
  var down: UInt64 { counts.withLock { $0.down } }
}

/// Why a tunnel's session ended while the tunnel was open (set once by its watcher).
final class SessionEnd: Sendable {
  private let reason = Mutex<String?>(nil)
  func set(_ why: String) { reason.withLock { $0 = why } }
  var value: String? { reason.withLock { $0 } }
}
