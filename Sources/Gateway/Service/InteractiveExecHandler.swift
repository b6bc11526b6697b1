import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import SandboxProtocol

extension OpenShellService {
  /// ExecSandboxInteractive: a command with streamed input (OpenShell: openshell-behavior.md §8.3,
  /// upstream `handle_exec_sandbox_interactive`). The first `ExecSandboxInput` must be `start` (an
  /// `ExecSandboxRequest`, checked as ExecSandbox checks it; `tty` allowed); later ones are `stdin`
  /// chunks (raw bytes, e.g. keystrokes) and `resize{cols, rows}`. With `tty` the command runs on a
  /// pseudo-terminal in the sandbox (its controlling terminal; window `cols` × `rows`, default 80 × 24,
  /// each at most 10,000) and all its output arrives as `stdout`; without, stdout and stderr are piped
  /// and the end of the caller's stream closes the command's stdin. The response streams
  /// `ExecSandboxEvent`s as produced, then `exit` (124 when `execution_timeout` expired), then OK.
  ///
  /// Errors: INVALID_ARGUMENT (first message not `start`, bad request, a second `start`), NOT_FOUND,
  /// FAILED_PRECONDITION (sandbox not READY), UNAVAILABLE (no supervisor). Audited like ExecSandbox
  /// (`audit.exec_started` with `tty`, `audit.exec_ended`). A caller that goes away ends the command.
  public func execSandboxInteractive(
    request: RPCAsyncSequence<Openshell_V1_ExecSandboxInput, any Error>, response: RPCWriter<Openshell_V1_ExecSandboxEvent>,
    context: ServerContext
  ) async throws {
    _ = try userCaller("ExecSandboxInteractive")
    let hub = try requireHub("ExecSandboxInteractive")
    var iterator = request.makeAsyncIterator()
    guard let first = try await iterator.next(), case .start(var start)? = first.payload else {
      throw RPCErrors.invalidArgument(field: "start", "the first ExecSandboxInput must be start")
    }
    try Self.validateExec(start, interactive: true)
    let state = await store.state
    let ws = try workspace(start.workspaceScope, state)
    guard let sandbox = state.sandbox(named: start.sandbox, workspace: ws) else {
      throw RPCErrors.notFound("sandbox \(ws)/\(start.sandbox)")
    }
    guard sandbox.phase == .ready else {
      throw RPCErrors.failedPrecondition("sandbox \(ws)/\(sandbox.name) is not ready (phase \(sandbox.phase.name.lowercased()))")
    }
    start.sandbox = sandbox.id
    if start.workdir.isEmpty { start.workdir = SandboxProtocol.workspace }
    if start.tty {
      if start.cols == 0 { start.cols = 80 }
      if start.rows == 0 { start.rows = 24 }
    }
    let channel = try await hub.openRelay(sandboxID: sandbox.id, service: SandboxProtocol.interactiveExecService, flowControl: true)
    defer { channel.finish() }
    let actor = CallerIdentity.current.actor
    let execID = RandomID.uuid()
    let started = ContinuousClock.now
    let secrets = vault.map { AuditRecorder.providerSecrets(workspace: sandbox.workspace, state: state, vault: $0) } ?? []
    try await audit.execStarted(sandboxID: sandbox.id, execID: execID, command: start.command, tty: start.tty, secrets: secrets, actor: actor)
    channel.send(try Openshell_V1_ExecSandboxInput.with { $0.start = start }.serializedData())
    let audit = self.audit
    @Sendable func ended(_ code: Int32?, _ error: String) async {
      let ms = UInt64(max(0, (ContinuousClock.now - started).seconds * 1000))
      await audit.execEnded(sandboxID: sandbox.id, execID: execID, exitCode: code ?? -1, durationMs: ms, error: error, actor: actor)
    }
    let inputs = IteratorTransfer(iterator)
    let violation = SessionEnd()
    let exitCode: Int32?
    do {
      exitCode = try await withRPCCancellationHandler {
        try await withThrowingTaskGroup(of: Void.self) { group in
          // Caller → sandbox: stdin and resize messages as they come; the end of the caller's stream is
          // an empty frame (stdin ended), not the end of the channel (the command's output still flows).
          // A caller that breaks the protocol ends the command and is told why.
          group.addTask {
            var inputs = inputs.iterator
            do {
              while let input = try await inputs.next() {
                switch input.payload {
                case .stdin(let d): if !d.isEmpty { await channel.sendWaiting(try input.serializedData()) }
                case .resize(let r):
                  guard r.cols <= Self.maxTerminalSide, r.rows <= Self.maxTerminalSide else {
                    throw RPCErrors.invalidArgument(field: "resize", "at most \(Self.maxTerminalSide) columns and rows")
                  }
                  await channel.sendWaiting(try input.serializedData())
                case .start: throw RPCErrors.invalidArgument(field: "start", "only the first message may be start")
                case nil: continue
                }
              }
              await channel.sendWaiting(Data())
            } catch let e as RPCError where e.code == .invalidArgument {
              violation.set(e.message)
              channel.cancel()
            }
          }
          var code: Int32?
          do {
            for try await data in channel.incoming {
              let event = try Openshell_V1_ExecSandboxEvent(serializedBytes: data)
              try await response.write(event)
              channel.consumed(data.count)
              if case .exit(let x)? = event.payload {
                code = x.exitCode
                break
              }
            }
          } catch is CancellationError where violation.value != nil {}
          group.cancelAll()
          if let why = violation.value { throw RPCError(code: .invalidArgument, message: why) }
          return code
        }
      } onCancelRPC: {
        channel.cancel()
      }
    } catch {
      await ended(nil, "ended without an exit status: \(error is CancellationError ? "cancelled" : String(describing: error).prefix(200))")
      throw Self.relayEnded(error, sandbox: "\(ws)/\(sandbox.name)")
    }
    await ended(exitCode, exitCode == nil ? "the supervisor went away before the command finished" : "")
    guard exitCode != nil else { throw Self.supervisorWentAway("\(ws)/\(sandbox.name)") }
  }
}
