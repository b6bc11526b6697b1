import Foundation
import GRPCCore
import OpenShellAPI
import Testing

/// ExecSandboxInteractive through `openshell sandbox exec -t` and `sandbox connect` without an ssh
/// client, driven through a real pseudo-terminal (python's pty), against a real daemon and sandbox.
@Suite("CLI interactive exec", .serialized, .timeLimit(.minutes(10)))
struct InteractiveExecTests {
  /// Runs argv[1:] on a pseudo-terminal of 30 rows × 100 columns; once `first` appeared it resizes the
  /// terminal to 40 × 120 (the kernel signals SIGWINCH to the CLI), waits a second and types `line`
  /// and Return; prints everything read and the exit code.
  static let driver = """
    import fcntl, os, pty, select, struct, sys, termios, time
    first, line, argv = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3:]
    def size(fd, rows, cols):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    pid, fd = pty.fork()
    if pid == 0:
        size(0, 30, 100)
        os.execv(argv[0], argv)
    out = b""
    def pump(seconds, until=None):
        global out
        end = time.time() + seconds
        while time.time() < end:
            if until is not None and until in out:
                return
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    d = os.read(fd, 4096)
                except OSError:
                    return
                if not d:
                    return
                out += d
    pump(20, first)
    size(fd, 40, 120)
    time.sleep(1)
    os.write(fd, line + b"\\r")
    pump(20)
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(out.decode(errors="replace"))
    sys.stdout.write("\\nEXIT %d\\n" % os.waitstatus_to_exitcode(status))
    """

  @Test("exec -t: a terminal of the caller's size, resize, raw keystrokes, exit code; connect falls back without ssh")
  func interactiveExec() async throws {
    let env = try CLIEnv("itty")
    defer { env.cleanup() }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "ittygw", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "box"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["sandbox", "delete", "box"]) }
    let script = env.root.appendingPathComponent("drive.py").path
    try Self.driver.write(toFile: script, atomically: true, encoding: .utf8)

    // The command sees a terminal of 30 × 100, then (after the resize) 40 × 120; a line typed on the
    // local terminal arrives through raw mode and the remote line discipline; its exit code is ours.
    let remote = #"tty; stty size; echo ready; read x; stty size; id -un; echo "got:$x"; exit 7"#
    r = try env.run([script, "ready\r\n", "hello", CLIEnv.openshell, "sandbox", "exec", "-t", "box", "--", "sh", "-c", remote], binary: "/usr/bin/python3")
    #expect(r.out.contains("/dev/pts/"), "\(r)")
    #expect(r.out.contains("30 100\r\n"), "\(r)")
    #expect(r.out.contains("40 120\r\n"), "\(r)")
    #expect(r.out.contains("got:hello\r\n") && r.out.contains("sandbox\r\n"), "\(r)")
    #expect(r.out.contains("EXIT 7"), "\(r)")

    // ^C typed on the local terminal reaches the remote terminal as a byte and interrupts the command there.
    r = try env.run(
      [script, "ready\r\n", "\u{3}", CLIEnv.openshell, "sandbox", "exec", "-t", "box", "--", "sh", "-c", "echo ready; sleep 30; echo not-interrupted"],
      binary: "/usr/bin/python3")
    #expect(r.out.contains("EXIT 130") && !r.out.contains("not-interrupted"), "\(r)")

    // connect without an OpenSSH client: a login shell on a terminal through interactive exec.
    r = try env.run(
      [script, "$ ", "echo marker-$((6*7)); tty; exit 3", CLIEnv.openshell, "sandbox", "connect", "box"], binary: "/usr/bin/python3",
      env: ["OPENSHELL_SSH": "/nonexistent/ssh"])
    #expect(r.out.contains("no ssh client") && r.out.contains("marker-42") && r.out.contains("/dev/pts/"), "\(r)")
    #expect(r.out.contains("EXIT 3"), "\(r)")
    // ... and with a command and piped stdin: no terminal, stdin streamed to its end.
    r = try env.run(
      ["-c", "printf 'a\\nb\\n' | OPENSHELL_SSH=/nonexistent/ssh '\(CLIEnv.openshell)' sandbox connect box -- 'wc -l; tty; exit 5'"], binary: "/bin/sh")
    #expect(r.code == 5 && r.out.hasPrefix("2\nnot a tty\n"), "\(r)")

    // The contract's errors: the first message must be start; the sandbox must exist.
    await #expect(throws: RPCError.self) {
      try await env.withClient("ittygw") { c in
        try await c.execSandboxInteractive(request: StreamingClientRequest { w in try await w.write(.with { $0.stdin = Data("x".utf8) }) }) { response in
          for try await _ in response.messages {}
        }
      }
    }
    let codes = try await env.withClient("ittygw") { c -> [RPCError.Code] in
      var out: [RPCError.Code] = []
      for start in [
        Openshell_V1_ExecSandboxRequest.with {
          $0.sandbox = "box"; $0.command = ["true"]; $0.tty = true; $0.cols = 20000
        },
        Openshell_V1_ExecSandboxRequest.with {
          $0.sandbox = "nope"; $0.command = ["true"]
        },
      ] {
        do {
          try await c.execSandboxInteractive(request: StreamingClientRequest { w in try await w.write(.with { $0.start = start }) }) { response in
            for try await _ in response.messages {}
          }
        } catch let e as RPCError { out.append(e.code) }
      }
      return out
    }
    #expect(codes == [.invalidArgument, .notFound], "\(codes)")

    // Each session is in the audit with its terminal flag and exit code.
    r = try env.replay(["audit", env.dataDir("ittygw").appendingPathComponent("log").path])
    #expect(r.out.contains("(tty): sh -c") && r.out.contains("ended: exit 7 after"), "\(r.out.suffix(3000))")
  }
}
