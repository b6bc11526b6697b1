import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import SandboxProtocol
import SwiftProtobuf

/// Supervisor-facing RPCs (a sandbox identity, for itself only; see `sandboxCaller`). The protocol
/// and where it departs from OpenShell: `SandboxProtocol` (Sources/SandboxProtocol).
extension OpenShellService {
  func requireHub(_ rpc: String) throws -> SupervisorHub {
    guard let hub else { throw RPCError(code: .unimplemented, message: "\(rpc): this gateway runs no sandboxes") }
    return hub
  }

  /// ConnectSupervisor: `hello` first; the session lives until either side ends the stream. The gateway
  /// sends `SessionAccepted`, then `RelayOpen` requests; the supervisor may send heartbeats and
  /// `RelayOpenResult` failures. A second session presenting the sandbox's identity is arbitrated by
  /// ``SessionArbitration`` (refused, or it supersedes this one); a superseded session's stream ends with
  /// ABORTED naming why, so its supervisor reconnects. Every accepted session is audited
  /// (`supervisor.connected`, then `supervisor.disconnected` with its duration and why it ended; bounded per
  /// sandbox by ``SupervisorSessionAudit``).
  public func connectSupervisor(
    request: RPCAsyncSequence<Openshell_V1_SupervisorMessage, any Error>, response: RPCWriter<Openshell_V1_GatewayMessage>, context: ServerContext
  ) async throws {
    let hub = try requireHub("ConnectSupervisor")
    var iterator = request.makeAsyncIterator()
    guard let first = try await iterator.next(), case .hello(let hello)? = first.payload else {
      throw RPCError(code: .invalidArgument, message: "ConnectSupervisor: the first message must be hello")
    }
    let id = try sandboxCaller("ConnectSupervisor", claimed: hello.sandboxID)
    let state = await store.state
    guard let sandbox = state.sandboxes[id] else { throw RPCErrors.notFound("sandbox \(id)") }
    guard [.provisioning, .starting, .ready].contains(sandbox.phase) else {
      throw RPCErrors.failedPrecondition("sandbox \(id) is \(sandbox.phase.name.lowercased()); its supervisor may not connect")
    }
    let token: UUID
    let outbound: AsyncStream<Openshell_V1_GatewayMessage>
    let clock: SupervisorHub.SessionClock
    switch hub.register(sandboxID: id, instanceID: hello.instanceID, epoch: hello.connectionEpoch) {
    case .refused(let error): throw error
    case .accepted(let t, let o, let c): (token, outbound, clock) = (t, o, c)
    }
    defer { hub.unregister(sandboxID: id, token: token) }
    let sessionID = token.uuidString.lowercased()
    let sessions = supervisorSessions
    // Recorded after the driver has recorded READY, not before (issue 14: READY's commit waited for this one's
    // flushes); so `supervisor.connected` follows `sandbox.ready` in the log. At most 2 s later when the driver
    // is slow to handle the connect. Its disconnect is recorded only after it (``ended(_:)`` waits for this task).
    let session = SupervisorSessionAudit.Session(
      sandboxID: id, sessionID: sessionID, instanceID: hello.instanceID, epoch: hello.connectionEpoch, peer: context.remotePeer,
      identity: "sandbox:\(id)", certificateSHA256: CallerIdentity.current.fingerprint ?? "")
    let handled = hub.expectConnectHandled(id, token: token)
    let connectRecorded = Task {
      await handled?.wait(timeout: .seconds(2))
      await sessions.connected(session)
    }
    let drain = SubscriptionDrain.server
    // Written even when the RPC is being cancelled (its own task), and before the call ends.
    @Sendable func ended(_ reason: String) async {
      await Task {
        await connectRecorded.value
        await sessions.disconnected(sessionID: sessionID, reason: reason)
      }.value
    }
    do {
      try await serveSession(id: id, hello: hello, token: token, clock: clock, outbound: outbound, iterator: iterator, hub: hub, response: response)
    } catch {
      let why: String
      if drain?.isDraining == true {
        why = "gateway shutting down"
      } else if let e = error as? RPCError, e.code == .aborted {
        why = e.message
      } else if let phase = await store.state.sandboxes[id]?.phase, [.stopping, .stopped, .deleting].contains(phase) {
        // The driver ended the supervisor because the sandbox is being stopped or deleted.
        why = "sandbox \(phase.name.lowercased()): connection closed"
      } else if await store.state.sandboxes[id] == nil {
        why = "sandbox deleted: connection closed"
      } else {
        why = "connection lost: \(String(describing: error).prefix(200))"
      }
      await ended(why)
      throw error
    }
    await ended(drain?.isDraining == true ? "gateway shutting down" : "the supervisor closed the session")
  }

  /// The accepted session of ``connectSupervisor(request:response:context:)``: until either side ends it.
  private func serveSession(
    id: String, hello: Openshell_V1_SupervisorHello, token: UUID, clock: SupervisorHub.SessionClock,
    outbound: AsyncStream<Openshell_V1_GatewayMessage>, iterator: RPCAsyncSequence<Openshell_V1_SupervisorMessage, any Error>.AsyncIterator,
    hub: SupervisorHub, response: RPCWriter<Openshell_V1_GatewayMessage>
  ) async throws {
    try await response.write(
      .with {
        $0.sessionAccepted = .with {
          $0.sessionID = token.uuidString.lowercased(); $0.heartbeatInterval = .init(seconds: 10)
        }
      })
    hub.emit(.connected(sandboxID: id, instanceID: hello.instanceID))
    // The supervisor's messages are read by a child task; ending (or failing) it unregisters the session,
    // which finishes `outbound` and so ends the loop below. Being superseded finishes `outbound` too.
    let frames = IteratorTransfer(iterator)
    let reader = Task {
      var frames = frames.iterator
      defer { hub.unregister(sandboxID: id, token: token) }
      while let message = try await frames.next() {
        clock.touch()
        if case .relayOpenResult(let r)? = message.payload, !r.success {
          hub.failRelay(r.channelID, RPCError(code: .unavailable, message: "sandbox \(id) refused relay: \(r.error)"))
        }
      }
    }
    do {
      for await message in outbound { try await response.write(message) }
    } catch {
      reader.cancel()
      throw error
    }
    if let why = hub.supersededReason(token) {
      reader.cancel()
      throw RPCError(code: .aborted, message: why)
    }
    try await reader.value
  }

  /// RelayStream: the supervisor dials it for a channel the gateway asked for; first frame `init`.
  public func relayStream(request: RPCAsyncSequence<Openshell_V1_RelayFrame, any Error>, response: RPCWriter<Openshell_V1_RelayFrame>, context: ServerContext)
    async throws
  {
    let hub = try requireHub("RelayStream")
    var iterator = request.makeAsyncIterator()
    guard let first = try await iterator.next(), case .init_p(let initFrame)? = first.payload else {
      throw RPCError(code: .invalidArgument, message: "RelayStream: the first frame must be init")
    }
    let caller = CallerIdentity.current
    let id: String
    if let sid = caller.sandboxID {
      id = sid
    } else {
      // Token callers name their sandbox in the channel id's pending entry; the token must match it.
      guard let owner = hub.pendingOwner(initFrame.channelID) else { throw RPCErrors.notFound("relay channel \(initFrame.channelID)") }
      id = try sandboxCaller("RelayStream", claimed: owner)
    }
    let relay = try hub.accept(channelID: initFrame.channelID, from: id)
    let incoming = relay.incoming
    // The relay ends when the gateway side finished sending: after the exchange completed, or early when
    // the requester gave up (its caller went away). Returning ends the response stream, which is how
    // the supervisor learns to stop; so the supervisor's frames are read only until then, never waited
    // for (a command that keeps running sends nothing).
    let frames = IteratorTransfer(iterator)  // not used by this task from here on
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        var frames = frames.iterator
        do {
          while let frame = try await frames.next() {
            if case .data(let d)? = frame.payload {
              incoming.yield(d)
              await relay.fromSupervisor?.acquire(d.count)
            }
          }
          incoming.finish()
        } catch {
          incoming.finish(throwing: error)
        }
      }
      for await data in relay.outgoing {
        try await response.write(.with { $0.data = data })
        relay.toSupervisor?.release(data.count)
      }
      relay.toSupervisor?.close()
      relay.fromSupervisor?.close()
      group.cancelAll()
    }
  }

  /// PushSandboxLogs: batches of lines for the caller's own sandbox, kept outside the event log.
  public func pushSandboxLogs(request: RPCAsyncSequence<Openshell_V1_PushSandboxLogsRequest, any Error>, context: ServerContext) async throws
    -> Openshell_V1_PushSandboxLogsResponse
  {
    let hub = try requireHub("PushSandboxLogs")
    // A supervisor keeps this stream open for its lifetime; a gateway shutdown ends it (see SubscriptionDrain).
    // The unstructured task `run` uses inherits the caller's task-locals (CallerIdentity).
    let consume: @Sendable () async throws -> Openshell_V1_PushSandboxLogsResponse = {
      try await self.consumeLogs(request, hub: hub)
    }
    if let drain = SubscriptionDrain.current { return try await drain.run(rpc: context.cancellation, consume) }
    return try await consume()
  }

  func consumeLogs(_ request: RPCAsyncSequence<Openshell_V1_PushSandboxLogsRequest, any Error>, hub: SupervisorHub) async throws
    -> Openshell_V1_PushSandboxLogsResponse
  {
    var authorized: String?
    for try await batch in request {
      let id = try sandboxCaller("PushSandboxLogs", claimed: batch.sandboxID)
      if authorized == nil {
        guard await store.state.sandboxes[id] != nil else { throw RPCErrors.notFound("sandbox \(id)") }
        authorized = id
      }
      for line in batch.logs where !line.sandboxID.isEmpty && line.sandboxID != id {
        throw RPCErrors.permissionDenied("sandbox \(id) may not push log lines for sandbox \(line.sandboxID)")
      }
      hub.logs.append(
        id,
        batch.logs.map {
          var l = $0; if l.source.isEmpty || l.source == "gateway" { l.source = "sandbox" }; return l
        })
    }
    return .init()
  }

  /// ReportMainProcessExit: records `sandbox.main_process_exited` (actor `sandbox:<id>`), which ends the
  /// sandbox (COMPLETED / ERROR, see the projection). When the sandbox's memory cgroup recorded an OOM
  /// kill and the code is 137, a `sandbox.condition_set` follows that replaces the Ready condition with
  /// reason `OOMKilled` and "… killed: out of memory (limit 64Mi)".
  public func reportMainProcessExit(request: Openshell_V1_ReportMainProcessExitRequest, context: ServerContext) async throws
    -> Openshell_V1_ReportMainProcessExitResponse
  {
    let hub = try requireHub("ReportMainProcessExit")
    let id = try sandboxCaller("ReportMainProcessExit", claimed: request.sandboxID)
    let caller = CallerIdentity.current
    let local = driver as? LocalComputeDriver
    let result = try await store.execute(actor: caller.sandboxID != nil ? caller.actor : "sandbox:\(id)", requestID: "") { state in
      guard let s = state.sandboxes[id] else { throw RPCErrors.notFound("sandbox \(id)") }
      guard s.phase == .ready || s.phase == .provisioning || s.phase == .starting else { return Decision(events: []) }
      var events = [
        GatewayEvent(
          .sandboxMainProcessExited(
            .with {
              $0.id = id; $0.exitCode = request.exitCode
            }))
      ]
      if let note = local?.outOfMemoryNote(sandboxID: id, spec: s.spec, exitCode: request.exitCode) {
        events.append(
          GatewayEvent(
            .sandboxConditionSet(
              .with {
                $0.id = id; $0.type = "Ready"; $0.status = "False"; $0.reason = SandboxRecord.mainProcessOOMKilled
                $0.message = "the main process exited with code \(request.exitCode): \(note)"
              })))
      }
      return Decision(events: events)
    }
    let oom = result.decision.events.lazy.compactMap { e -> String? in
      if case .sandboxConditionSet(let c) = e.kind, c.reason == SandboxRecord.mainProcessOOMKilled { return c.message }
      return nil
    }.first
    hub.logs.gateway(id, oom ?? "main process exited with code \(request.exitCode)", level: oom == nil ? "INFO" : "ERROR")
    hub.emit(.mainProcessExited(sandboxID: id, exitCode: request.exitCode))
    return .init()
  }
}

/// Moves a request stream's iterator (not `Sendable`) to the one task that reads it from then on.
struct IteratorTransfer<Iterator>: @unchecked Sendable {
  let iterator: Iterator
  init(_ iterator: Iterator) { self.iterator = iterator }
}
