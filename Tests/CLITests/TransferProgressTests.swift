import Foundation
import Testing

/// `sandbox upload|download`: the progress bar on a terminal, and `--max-size`, named when exceeded
/// (issue 11), against a real daemon and sandbox.
@Suite("CLI transfer progress and limit", .serialized, .timeLimit(.minutes(10)))
struct TransferProgressTests {
  /// Runs argv[1:] on a pseudo-terminal and prints everything it wrote, then its exit code.
  static let onTerminal = """
    import os, pty, sys
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.argv[1], sys.argv[1:])
    out = b""
    while True:
        try:
            d = os.read(fd, 65536)
        except OSError:
            break
        if not d:
            break
        out += d
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(out.decode(errors="replace"))
    sys.stdout.write("\\nEXIT %d\\n" % os.waitstatus_to_exitcode(status))
    """

  @Test("a progress bar on a terminal, none in a pipe; --max-size refuses before copying and names the limit")
  func progressAndLimit() async throws {
    let env = try CLIEnv("xfer")
    defer { env.cleanup() }
    var r = try env.run(["gateway", "start", "--name", "xfergw", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "box"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["sandbox", "delete", "box"]) }
    let root = env.root.path
    var bytes = [UInt8](repeating: 0, count: 8 << 20)
    for i in stride(from: 0, to: bytes.count, by: 8) { withUnsafeBytes(of: UInt64.random(in: 0...UInt64.max)) { for j in 0..<8 { bytes[i + j] = $0[j] } } }
    FileManager.default.createFile(atPath: root + "/big.bin", contents: Data(bytes))
    let script = root + "/onterm.py"
    try Self.onTerminal.write(toFile: script, atomically: true, encoding: .utf8)

    // On a terminal: a bar with a percentage that reaches 100%, then the checked result.
    r = try env.run([script, CLIEnv.openshell, "sandbox", "upload", "box", root + "/big.bin", "/sandbox/in"], binary: "/usr/bin/python3")
    #expect(r.out.contains("Uploading big.bin [") && r.out.contains("100%") && r.out.contains("8.0 MiB"), "\(r)")
    #expect(r.out.contains("Uploaded 8388608 bytes (1 file, checked)") && r.out.contains("EXIT 0"), "\(r)")
    r = try env.run([script, CLIEnv.openshell, "sandbox", "download", "box", "/sandbox/in/big.bin", root + "/back"], binary: "/usr/bin/python3")
    #expect(r.out.contains("Downloading big.bin [") && r.out.contains("Downloaded 8388608 bytes") && r.out.contains("EXIT 0"), "\(r)")
    // In a pipe: no bar, no escape sequences.
    r = try env.run(["sandbox", "upload", "box", root + "/big.bin", "/sandbox/in2"])
    #expect(r.code == 0 && !r.err.contains("[#") && !r.err.contains("\u{1B}"), "\(r)")

    // Over the limit: refused before anything moves, the limit named; no success line.
    r = try env.run(["sandbox", "upload", "box", root + "/big.bin", "/sandbox/in3", "--max-size", "1M"])
    #expect(r.code == 1 && r.err.contains("transfer limit of 1.0 MiB (--max-size)") && !r.out.contains("✓"), "\(r)")
    r = try env.run(["sandbox", "exec", "box", "--", "sh", "-c", "test -e /sandbox/in3 && echo exists || echo absent"])
    #expect(r.out == "absent\n", "\(r)")
    r = try env.run(["sandbox", "download", "box", "/sandbox/in", root + "/back2", "--max-size", "4M"])
    #expect(r.code == 1 && r.err.contains("transfer limit of 4.0 MiB (--max-size)") && !r.out.contains("✓"), "\(r)")
    #expect(!FileManager.default.fileExists(atPath: root + "/back2/in"))
    r = try env.run(["sandbox", "upload", "box", root + "/big.bin", "--max-size", "lots"])
    #expect(r.code == 1 && r.err.contains("not a size"), "\(r)")
  }
}
