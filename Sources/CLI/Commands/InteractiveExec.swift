import CTerminal
import Dispatch
import Foundation
import GRPCCore
import OpenShellAPI

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell sandbox exec -t` (and `sandbox connect` without an `ssh` client): ExecSandboxInteractive
/// with a pseudo-terminal in the sandbox. The local terminal is put in raw mode (every keystroke,
/// ^C included, goes to the remote side as a byte) and restored at the end; its size is sent at start
/// and on every SIGWINCH. Exit code = the remote command's.
extension SandboxCLI {
  static func execInteractive(
    _ c: ShellClient, name: String, workspace: String, command: [String], workdir: String?, timeout: Int64, tty: Bool
  ) async throws -> Int32 {
    var cols: UInt16 = 80
    var rows: UInt16 = 24
    if tty { _ = cterminal_get_size(isatty(1) == 1 ? 1 : 0, &cols, &rows) }
    let start = Openshell_V1_ExecSandboxRequest.with {
      $0.sandbox = name
      $0.command = command
      $0.workdir = workdir ?? ""
      $0.workspaceScope = scope(workspace)
      $0.tty = tty
      if tty {
        $0.cols = UInt32(cols == 0 ? 80 : cols)
        $0.rows = UInt32(rows == 0 ? 24 : rows)
        $0.environment = ["TERM": ProcessInfo.processInfo.environment["TERM"] ?? "xterm-256color"]
      }
      if timeout > 0 { $0.executionTimeout = .init(seconds: timeout) }
    }
    let raw = tty && isatty(0) == 1 ? RawTerminal(fd: 0) : nil
    defer { raw?.restore() }
    let (inputs, sink) = AsyncStream<Openshell_V1_ExecSandboxInput>.makeStream()
    // Keystrokes (or piped bytes) as they are read; at the end of a pipe, a non-terminal exec's stdin
    // ends (a terminal session keeps its stream open for resizes, as `ssh -t` does).
    Thread.detachNewThread {
      var buffer = [UInt8](repeating: 0, count: 16384)
      while true {
        let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if n > 0 {
          sink.yield(.with { $0.stdin = Data(buffer[0..<n]) })
        } else if n < 0 && errno == EINTR {
          continue
        } else {
          break
        }
      }
      if !tty { sink.finish() }
    }
    var resizes: DispatchSourceSignal?
    if tty {
      signal(SIGWINCH, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: SIGWINCH, queue: .global())
      source.setEventHandler {
        var c: UInt16 = 0
        var r: UInt16 = 0
        if cterminal_get_size(isatty(1) == 1 ? 1 : 0, &c, &r) == 0, c > 0, r > 0 {
          sink.yield(
            .with {
              $0.resize = .with {
                $0.cols = UInt32(c); $0.rows = UInt32(r)
              }
            })
        }
      }
      source.resume()
      resizes = source
    }
    defer { resizes?.cancel() }
    var o = CallOptions.defaults
    o.waitForReady = false
    return try await c.execSandboxInteractive(
      request: StreamingClientRequest { writer in
        try await writer.write(.with { $0.start = start })
        for await input in inputs { try await writer.write(input) }
      },
      options: o
    ) { response in
      var code: Int32?
      for try await event in response.messages {
        switch event.payload {
        case .stdout(let d): writeAll(1, d.data)
        case .stderr(let d): writeAll(2, d.data)
        case .exit(let x): code = x.exitCode
        case nil: break
        }
      }
      sink.finish()
      guard let code else { throw CLIError("the exec stream ended without an exit status") }
      return code
    }
  }

  /// Writes all of `data` to `fd` (terminal output must not be reordered or dropped).
  static func writeAll(_ fd: Int32, _ data: Data) {
    data.withUnsafeBytes { raw in
      var offset = 0
      while offset < raw.count {
        let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
        if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { return }
      }
    }
  }
}

/// The local terminal in raw mode (cfmakeraw) until ``restore()``.
final class RawTerminal: @unchecked Sendable {
  private let fd: Int32
  private var saved = termios()
  private var active = false

  init?(fd: Int32) {
    self.fd = fd
    guard tcgetattr(fd, &saved) == 0 else { return nil }
    var raw = saved
    cfmakeraw(&raw)
    guard tcsetattr(fd, TCSANOW, &raw) == 0 else { return nil }
    active = true
  }

  func restore() {
    guard active else { return }
    active = false
    _ = tcsetattr(fd, TCSANOW, &saved)
  }
}
