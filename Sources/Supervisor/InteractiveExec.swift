import CTerminal
import Foundation
import GRPCCore
import OpenShellAPI
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// One ExecSandboxInteractive command inside the sandbox (`RelayOpen{service_id: "exec-interactive"}`,
/// framing in ``SandboxProtocol/interactiveExecService``): started through the launcher with the
/// workloads' plan like every exec. With `tty` it gets a new pseudo-terminal from the sandbox's own
/// devpts as its controlling terminal (a new session; the plan adds read-write `/dev/tty` and
/// `/dev/pts` so that programs can reopen it), `resize` sets the window size (the kernel signals
/// SIGWINCH), and the end of the caller's stdin is ignored (as `ssh -t` does). Without `tty`, stdout
/// and stderr are pipes and the end of the caller's stdin closes the command's stdin.
final class InteractiveCommand: Sendable {
  let process: SpawnedProcess
  /// The pseudo-terminal's master (tty mode), else -1.
  let master: Int32
  let input: PipeWriter?

  static let terminalPlan = ["--rw", "/dev/tty", "--rw", "/dev/pts"]

  init(_ r: Openshell_V1_ExecSandboxRequest, workload: Workload) throws {
    // The launcher enters the workdir and looks the command up as the workload user (`--chdir`).
    let workdir = Workload.workdir(of: r)
    guard r.tty else {
      process = try workload.spawn(r.command, environment: r.environment, workdir: workdir)
      master = -1
      input = PipeWriter(fd: process.stdin!)
      return
    }
    var name = [CChar](repeating: 0, count: 128)
    let fd = cterminal_open_pty(&name, name.count, UInt16(clamping: r.cols), UInt16(clamping: r.rows))
    guard fd >= 0 else { throw SpawnError("cannot open a pseudo-terminal: \(String(cString: strerror(-fd)))") }
    let path = String(cString: name)
    // The workload user owns its terminal, as a login would (best effort: without CAP_CHOWN the
    // descriptor it inherits is still usable).
    if let uid = workload.launch.confinement?.uid, let gid = workload.launch.confinement?.gid { _ = chown(path, uid, gid) }
    var env = r.environment
    if env["TERM"] == nil { env["TERM"] = "xterm-256color" }
    do {
      process = try workload.spawn(
        r.command, environment: env, workdir: workdir, extraPlan: Self.terminalPlan,
        stdio: (.terminal(path), .fd(0), .fd(0)), newSession: true)
    } catch {
      Glibc.close(fd)
      throw error
    }
    master = fd
    input = PipeWriter(fd: dup(fd))
  }

  /// Output as (isStderr, bytes) chunks until every holder of the terminal or pipes closed it.
  func output() -> AsyncStream<(Bool, Data)> {
    AsyncStream { c in
      let streams: [(Bool, Int32)] = master >= 0 ? [(false, dup(master))] : [(false, process.stdout!), (true, process.stderr!)]
      let group = DispatchGroup()
      for (isErr, fd) in streams {
        group.enter()
        // A pseudo-terminal's master reads EIO once no process holds the slave: that is its end.
        Task {
          for await chunk in readChunks(fd) { c.yield((isErr, chunk)) }
          group.leave()
        }
      }
      group.notify(queue: .global()) { c.finish() }
    }
  }

  func write(_ data: Data) async { await input?.write(data) }

  /// The caller's stdin ended: closes the command's stdin (pipes only; a terminal stays open).
  func endOfInput() { if master < 0 { input?.close() } }

  func resize(cols: UInt32, rows: UInt32) {
    guard master >= 0, cols > 0, rows > 0 else { return }
    _ = cterminal_set_size(master, UInt16(clamping: cols), UInt16(clamping: rows))
  }

  func close() {
    input?.close()
    if master >= 0 { Glibc.close(master) }
  }
}

extension Session {
  /// One interactive exec channel: reads `start`, runs the command (``InteractiveCommand``), forwards
  /// stdin/resize messages, streams its output and finally `exit`. The gateway ending the channel
  /// (the caller went away) kills the command's process group; so does `execution_timeout` (exit 124).
  func relayInteractive(_ open: Openshell_V1_RelayOpen) async {
    let (events, sink) = AsyncStream<Data>.makeStream()
    @Sendable func emit(_ e: Openshell_V1_ExecSandboxEvent) { if let d = try? e.serializedData() { sink.yield(d) } }
    do {
      try await client.relayStream(
        request: StreamingClientRequest(metadata: metadata) { writer in
          try await writer.write(.with { $0.init_p = .with { $0.channelID = open.channelID } })
          for await data in events { try await writer.write(.with { $0.data = data }) }
        }
      ) { response in
        var frames = response.messages.makeAsyncIterator()
        var start: Openshell_V1_ExecSandboxRequest?
        while start == nil, let frame = try await frames.next() {
          guard case .data(let d)? = frame.payload else { continue }
          guard case .start(let s)? = try Openshell_V1_ExecSandboxInput(serializedBytes: d).payload else { break }
          start = s
        }
        guard let start else {
          sink.finish()
          return
        }
        let command: InteractiveCommand
        do {
          command = try InteractiveCommand(start, workload: workload)
        } catch {
          let code = (error as? Workload.CommandError)?.exitCode ?? 127
          emit(.with { $0.stderr = .with { $0.data = Data("openshell-sandbox: \(error)\n".utf8) } })
          emit(.with { $0.exit = .with { $0.exitCode = code } })
          sink.finish()
          while (try await frames.next()) != nil {}
          return
        }
        let pid = command.process.pid
        let exited = SharedFlag()
        let timedOut = SharedFlag()
        if !start.stdin.isEmpty { await command.write(start.stdin) }
        let runner = Task {
          let output = command.output()
          let drained = Task {
            for await (isErr, chunk) in output {
              emit(isErr ? .with { $0.stderr = .with { $0.data = chunk } } : .with { $0.stdout = .with { $0.data = chunk } })
            }
          }
          let status = await Spawner.wait(pid)
          exited.set()
          // Descendants that keep the terminal or pipes open get one second, then the group is killed;
          // the exit is reported even if a process outside the group still holds the terminal.
          let grace = Task {
            try await Task.sleep(for: .seconds(1))
            kill(-pid, SIGKILL)
            try await Task.sleep(for: .seconds(1))
            drained.cancel()
          }
          await drained.value
          grace.cancel()
          workload.finished(pid)
          emit(.with { $0.exit = .with { $0.exitCode = timedOut.isSet ? SandboxProtocol.timeoutExitCode : status } })
          command.close()
          sink.finish()
        }
        let timer = Task {
          guard start.hasExecutionTimeout, start.executionTimeout.seconds > 0 else { return }
          try await Task.sleep(for: .seconds(start.executionTimeout.seconds))
          if !exited.isSet {
            timedOut.set()
            kill(-pid, SIGKILL)
          }
        }
        defer { timer.cancel() }
        do {
          while let frame = try await frames.next() {
            guard case .data(let d)? = frame.payload else { continue }
            if d.isEmpty {
              command.endOfInput()
              continue
            }
            switch try Openshell_V1_ExecSandboxInput(serializedBytes: d).payload {
            case .stdin(let bytes): await command.write(bytes)
            case .resize(let r): command.resize(cols: r.cols, rows: r.rows)
            default: break
            }
          }
        } catch {
          if !exited.isSet { kill(-pid, SIGKILL) }
          throw error
        }
        // The gateway ended the channel: after the exit (nothing to do) or because its caller went away.
        if !exited.isSet { kill(-pid, SIGKILL) }
        _ = await runner.value
      }
    } catch {
      sink.finish()
      FileHandle.standardError.write(Data("openshell-sandbox: interactive relay \(open.channelID): \(error)\n".utf8))
    }
  }
}
