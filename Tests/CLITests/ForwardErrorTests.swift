import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// What a fresh-clone user saw go wrong around `forward start` and `sandbox upload|download`: each
/// failure is one readable line and a non-zero exit, and nothing is left behind or started.
@Suite("CLI forward and transfer errors", .serialized, .timeLimit(.minutes(6)))
struct ForwardErrorTests {
  /// The lines of `text` that are not empty.
  static func lines(_ text: String) -> [Substring] { text.split(separator: "\n").filter { !$0.isEmpty } }

  @Test("forward start on a port another process listens on: one line, exit 1, no record, in the foreground and with --background")
  func busyPort() async throws {
    let env = try CLIEnv("fwdbusy")
    defer { env.cleanup() }
    var r = try env.run(["gateway", "start", "--name", "fwdbusy", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "box"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["sandbox", "delete", "box"]) }

    let port = freePort()
    let holder = listenOn(port)
    defer { close(holder) }
    let expected = "error: cannot forward 127.0.0.1:\(port): address already in use"
    for mode in [["--background"], []] {
      r = try env.run(["forward", "start", "\(port)", "box"] + mode)
      #expect(r.code == 1, "\(mode) \(r)")
      #expect(Self.lines(r.err) == [Substring(expected)], "\(mode) \(r)")
      #expect(!r.out.contains("✓") && !r.err.contains("bind ["), "\(mode) \(r)")
      let records = (try? FileManager.default.contentsOfDirectory(atPath: env.config.path + "/openshell/forwards")) ?? []
      #expect(records.isEmpty, "\(mode) left \(records)")
      r = try env.run(["forward", "list"])
      #expect(r.out.contains("No active forwards"), "\(mode) \(r)")
    }
    // The holder's port is still its own: a connection reaches it (nothing else took it over).
    #expect(
      withLoopbackAddress(port) { a, l in
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        return connect(fd, a, l)
      } == 0)

    // A free port still forwards in the background, and its recorded pid is the ssh serving it.
    let free = freePort()
    r = try env.run(["forward", "start", "\(free)", "box", "--background"])
    #expect(r.code == 0 && r.out.contains("Forwarding 127.0.0.1:\(free)"), "\(r)")
    r = try env.run(["forward", "list"])
    #expect(r.out.contains("127.0.0.1:\(free)") && r.out.contains("running"), "\(r)")
    r = try env.run(["forward", "stop", "\(free)"])
    #expect(r.code == 0, "\(r)")
    try await Task.sleep(for: .milliseconds(300))
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    defer { close(fd) }
    #expect(withLoopbackAddress(free) { bind(fd, $0, $1) } == 0, "the stopped forward's port is free again")
  }

  @Test("sandbox create --forward: a busy port is refused before the sandbox exists; a free one forwards once the sandbox is ready")
  func createWithForward() async throws {
    let env = try CLIEnv("createfwd")
    defer { env.cleanup() }
    var r = try env.run(["gateway", "start", "--name", "createfwd", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    let busy = freePort()
    let holder = listenOn(busy)
    defer { close(holder) }
    r = try env.run(["sandbox", "create", "fwbox", "--forward", "\(busy)"])
    #expect(r.code == 1 && Self.lines(r.err) == [Substring("error: cannot forward 127.0.0.1:\(busy): address already in use")], "\(r)")
    r = try env.run(["sandbox", "get", "fwbox"])
    #expect(r.code != 0 && r.err.contains("not found"), "no sandbox was created: \(r)")

    // A free port: the sandbox is created, then a python http.server inside it is reached through the forward.
    let port = freePort()
    r = try env.run(["sandbox", "create", "fwbox", "--forward", "\(port)"])
    #expect(r.code == 0 && r.err.contains("Forwarding 127.0.0.1:\(port) to port \(port) in sandbox fwbox in the background"), "\(r)")
    defer { _ = try? env.run(["sandbox", "delete", "fwbox"]) }
    r = try env.run(["forward", "list"])
    #expect(r.out.contains("127.0.0.1:\(port)") && r.out.contains("running"), "\(r)")
    r = try env.run([
      "sandbox", "connect", "fwbox", "--",
      "cd /tmp && echo forwarded-ok > index.html && setsid python3 -m http.server \(port) --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &",
    ])
    #expect(r.code == 0, "\(r)")
    var body = ""
    for _ in 0..<50 {
      let c = try env.run(["-s", "-m", "2", "--noproxy", "*", "http://127.0.0.1:\(port)/index.html"], binary: "/usr/bin/curl")
      if c.code == 0, !c.out.isEmpty { body = c.out; break }
      try await Task.sleep(for: .milliseconds(200))
    }
    #expect(body.contains("forwarded-ok"), "the host reaches the sandbox's server through the forward")
    r = try env.run(["forward", "stop", "\(port)"])
    #expect(r.code == 0, "\(r)")
  }

  @Test("upload/download to a sandbox that does not exist: the gateway's one line, exit 1, no ssh started, nothing written")
  func missingSandbox() async throws {
    let env = try CLIEnv("xfermiss")
    defer { env.cleanup() }
    var r = try env.run(["gateway", "start", "--name", "xfermiss", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    let root = env.root.path
    try "payload\n".write(toFile: root + "/up", atomically: true, encoding: .utf8)
    let expected: [Substring] = ["error: sandbox default/nosuch not found"]

    r = try env.run(["sandbox", "upload", "nosuch", root + "/up"])
    #expect(r.code == 1 && Self.lines(r.err) == expected && r.out.isEmpty, "\(r)")
    r = try env.run(["sandbox", "download", "nosuch", "/sandbox/x", root + "/back"])
    #expect(r.code == 1 && Self.lines(r.err) == expected && r.out.isEmpty, "\(r)")
    #expect(!FileManager.default.fileExists(atPath: root + "/back"), "download created its destination before knowing the sandbox")
    // No ssh key pair was made for a transfer that never started.
    #expect(!FileManager.default.fileExists(atPath: env.config.path + "/openshell/ssh/id_ed25519"))
    _ = try env.run(["gateway", "stop", "--name", "xfermiss"])
  }
}
