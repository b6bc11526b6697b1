import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import SandboxProtocol
import SwiftProtobuf

extension OpenShellService {
  /// Limits as OpenShell's exec (openshell-behavior.md §1C): at most 1024 arguments of at most 32 KiB,
  /// 256 KiB in total, workdir at most 4096 bytes, stdin at most 4 MiB; NUL is rejected.
  static let maxExecArguments = 1024
  static let maxExecArgumentBytes = 32 << 10
  static let maxExecTotalBytes = 256 << 10
  static let maxExecStdin = 4 << 20
  /// Largest terminal width or height accepted (columns, rows).
  static let maxTerminalSide: UInt32 = 10_000

  /// ExecSandbox: runs one command in a READY sandbox through its supervisor (a relay channel, see
  /// `SandboxProtocol`) and streams stdout/stderr chunks as produced, then `exit`, then OK.
  /// `execution_timeout` expiry kills the command's process group; the exit code is then 124.
  public func execSandbox(request: Openshell_V1_ExecSandboxRequest, response: RPCWriter<Openshell_V1_ExecSandboxEvent>, context: ServerContext) async throws {
    _ = try userCaller("ExecSandbox")
    let hub = try requireHub("ExecSandbox")
    try Self.validateExec(request)
    let state = await store.state
    let ws = try workspace(request.workspaceScope, state)
    guard let sandbox = state.sandbox(named: request.sandbox, workspace: ws) else {
      throw RPCErrors.notFound("sandbox \(ws)/\(request.sandbox)")
    }
    guard sandbox.phase == .ready else {
      throw RPCErrors.failedPrecondition("sandbox \(ws)/\(sandbox.name) is not ready (phase \(sandbox.phase.name.lowercased()))")
    }
    var resolved = request
    resolved.sandbox = sandbox.id
    if resolved.workdir.isEmpty { resolved.workdir = SandboxProtocol.workspace }
    // An OOM kill of the command (exit 137 while the sandbox's memory cgroup counts a new OOM kill) is
    // said on stderr before the exit: "killed: out of memory (limit 64Mi)".
    let local = driver as? LocalComputeDriver
    let oomKillsBefore = local?.oomKills(sandboxID: sandbox.id)
    let channel = try await hub.openRelay(sandboxID: sandbox.id, service: SandboxProtocol.execService)
    defer { channel.finish() }
    // The session is on record before the command runs (issue 12); arguments holding any provider secret of
    // the workspace or any of this sandbox's sealed environment values are redacted.
    let actor = CallerIdentity.current.actor
    let execID = RandomID.uuid()
    let started = ContinuousClock.now
    let secrets =
      vault.map {
        AuditRecorder.providerSecrets(workspace: sandbox.workspace, state: state, vault: $0) + SandboxEnvironmentSecrets.sealedValues(of: sandbox, vault: $0)
      } ?? []
    try await audit.execStarted(sandboxID: sandbox.id, execID: execID, command: request.command, tty: request.tty, secrets: secrets, actor: actor)
    channel.send(try resolved.serializedData())
    // gRPC reports a cancelled RPC (the client went away, its deadline passed) through the context's
    // cancellation handle, not by cancelling this task: without the handler this loop would wait for the
    // command's next output for as long as the command runs. Cancelling the channel ends the loop and the
    // relay; the supervisor then kills the command's process group. A graceful shutdown cancels every RPC
    // too, but execs are left to finish within its grace period (see SubscriptionDrain); after it, this
    // task is cancelled, which ends the loop as well.
    let drain = SubscriptionDrain.server
    @Sendable func ended(_ code: Int32?, _ error: String) async {
      let ms = UInt64(max(0, (ContinuousClock.now - started).seconds * 1000))
      await audit.execEnded(sandboxID: sandbox.id, execID: execID, exitCode: code ?? -1, durationMs: ms, error: error, actor: actor)
    }
    let exitCode: Int32?
    do {
      exitCode = try await withRPCCancellationHandler {
        for try await data in channel.incoming {
          let event = try Openshell_V1_ExecSandboxEvent(serializedBytes: data)
          if case .exit(let x)? = event.payload,
            let note = local?.outOfMemoryNote(sandboxID: sandbox.id, spec: sandbox.spec, exitCode: x.exitCode, oomKillsBefore: oomKillsBefore ?? 0)
          {
            try await response.write(.with { $0.stderr = .with { $0.data = Data((note + "\n").utf8) } })
          }
          try await response.write(event)
          if case .exit(let x)? = event.payload { return x.exitCode }
        }
        return nil
      } onCancelRPC: {
        if drain?.isDraining != true { channel.cancel() }
      }
    } catch {
      await ended(nil, "ended without an exit status: \(error is CancellationError ? "cancelled" : String(describing: error).prefix(200))")
      throw Self.relayEnded(error, sandbox: "\(ws)/\(sandbox.name)")
    }
    await ended(exitCode, exitCode == nil ? "the supervisor went away before the command finished" : "")
    guard exitCode != nil else { throw Self.supervisorWentAway("\(ws)/\(sandbox.name)") }
  }

  /// UNAVAILABLE for an exec whose supervisor ended before the command's exit status arrived (the sandbox
  /// was stopped, restarted or its supervisor died).
  static func supervisorWentAway(_ sandbox: String) -> RPCError {
    RPCError(code: .unavailable, message: "the supervisor of sandbox \(sandbox) went away before the command finished (was the sandbox stopped?)")
  }

  /// The error an exec answers when its relay channel failed: the supervisor's stream breaking under it
  /// (grpc-swift's UNAVAILABLE/CANCELLED "Stream unexpectedly closed.", which names nothing the user
  /// knows) becomes ``supervisorWentAway(_:)``; cancellation and the handlers' own statuses pass unchanged.
  static func relayEnded(_ error: any Error, sandbox: String) -> any Error {
    guard let e = error as? RPCError, e.code == .unavailable || e.code == .cancelled else { return error }
    return supervisorWentAway(sandbox)
  }

  /// - Parameter interactive: ExecSandboxInteractive's `start` (which may ask for a TTY).
  static func validateExec(_ r: Openshell_V1_ExecSandboxRequest, interactive: Bool = false) throws {
    guard !r.command.isEmpty, !r.command[0].isEmpty else { throw RPCErrors.invalidArgument(field: "command", "must not be empty") }
    guard r.command.count <= maxExecArguments else { throw RPCErrors.invalidArgument(field: "command", "at most \(maxExecArguments) arguments") }
    var total = 0
    for (i, a) in r.command.enumerated() {
      guard a.utf8.count <= maxExecArgumentBytes else { throw RPCErrors.invalidArgument(field: "command[\(i)]", "longer than 32 KiB") }
      guard !a.utf8.contains(0) else { throw RPCErrors.invalidArgument(field: "command[\(i)]", "contains NUL") }
      total += a.utf8.count
    }
    try EnvironmentRule.check(r.environment, field: "environment")
    for (k, v) in r.environment { total += k.utf8.count + v.utf8.count }
    guard total <= maxExecTotalBytes else { throw RPCErrors.invalidArgument(field: "command", "command and environment exceed 256 KiB") }
    guard r.workdir.utf8.count <= 4096, !r.workdir.utf8.contains(0) else { throw RPCErrors.invalidArgument(field: "workdir", "invalid") }
    guard r.stdin.count <= maxExecStdin else { throw RPCErrors.invalidArgument(field: "stdin", "larger than 4 MiB") }
    if r.hasExecutionTimeout, r.executionTimeout.seconds < 0 {
      throw RPCErrors.invalidArgument(field: "execution_timeout", "must not be negative")
    }
    if r.tty, !interactive { throw RPCErrors.invalidArgument(field: "tty", "a terminal needs ExecSandboxInteractive (openshell sandbox exec -t)") }
    if interactive, r.tty, r.cols > maxTerminalSide || r.rows > maxTerminalSide {
      throw RPCErrors.invalidArgument(field: "cols/rows", "at most \(maxTerminalSide) each")
    }
  }

  /// GetSandboxLogs: the newest `lines` (default 2000) lines kept for the sandbox, filtered by
  /// `since_time`, `sources` and `min_level`.
  public func getSandboxLogs(request: Openshell_V1_GetSandboxLogsRequest, context: ServerContext) async throws -> Openshell_V1_GetSandboxLogsResponse {
    _ = try userCaller("GetSandboxLogs")
    let hub = try requireHub("GetSandboxLogs")
    let state = await store.state
    let ws = try workspace(request.workspaceScope, state)
    guard let sandbox = state.sandbox(named: request.sandbox, workspace: ws) else {
      throw RPCErrors.notFound("sandbox \(ws)/\(request.sandbox)")
    }
    let limit = request.lines == 0 ? 2000 : Int(request.lines)
    let result = hub.logs.lines(
      sandbox.id, limit: limit, since: request.hasSinceTime ? request.sinceTime.date : nil,
      sources: request.sources, minLevel: request.minLevel)
    return .with {
      $0.logs = result.lines
      $0.bufferTotal = UInt32(clamping: result.bufferTotal)
    }
  }
}
