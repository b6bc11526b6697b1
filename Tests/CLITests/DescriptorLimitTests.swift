import Foundation
import SandboxProtocol
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Issue 17: descriptors. A gateway raises its soft RLIMIT_NOFILE to the hard limit and says so; when
/// descriptors run out, `accept` failures are logged as RESOURCE_EXHAUSTED at most once a minute and the
/// gateway serves again once descriptors free up.
@Suite(.serialized) struct DescriptorLimitTests {
  /// Starts `openshell gateway serve` (plaintext, no sandboxes) under `prlimit --nofile=SOFT:HARD`.
  static func serve(_ env: CLIEnv, soft: Int, hard: Int) throws -> (pid: pid_t, port: Int, log: String) {
    let port = freePort()
    let data = env.root.appendingPathComponent("gw-\(soft)-\(hard)").path
    let log = env.root.appendingPathComponent("gw-\(soft)-\(hard).log").path
    let child = try Spawner.spawn(
      "/usr/bin/prlimit",
      ["--nofile=\(soft):\(hard)", "--", CLIEnv.openshell, "gateway", "serve", "--data-dir", data, "--port", "\(port)", "--plaintext"],
      environment: env.environment, stdout: .appendFile(log), stderr: .appendFile(log))
    for _ in 0..<300 {
      if let text = try? String(contentsOfFile: log, encoding: .utf8), text.contains("listening on") { return (child.pid, port, log) }
      if Spawner.poll(child.pid) != nil { break }
      usleep(50_000)
    }
    let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    kill(child.pid, SIGKILL)
    throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "gateway did not start: \(text)"])
  }

  static func stop(_ pid: pid_t) {
    kill(pid, SIGTERM)
    _ = Spawner.waitBlocking(pid)
  }

  /// A TCP connection to 127.0.0.1:`port` (the kernel completes it from the backlog even when the gateway
  /// cannot accept it), or -1.
  static func connectTo(_ port: Int) -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    let rc = withLoopbackAddress(port) { connect(fd, $0, $1) }
    if rc != 0 { close(fd); return -1 }
    return fd
  }

  /// `GET /healthz` over plaintext HTTP/1.1: the status line, or nil.
  static func health(_ port: Int) -> String? {
    let fd = connectTo(port)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var tv = timeval(tv_sec: 3, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    _ = req.withCString { write(fd, $0, strlen($0)) }
    var buf = [UInt8](repeating: 0, count: 512)
    let n = read(fd, &buf, buf.count)
    guard n > 0 else { return nil }
    return String(decoding: buf[0..<n], as: UTF8.self).components(separatedBy: "\r\n").first
  }

  @Test func softLimitIsRaisedToTheHardLimitAndLogged() throws {
    let env = try CLIEnv("fd-raise")
    defer { env.cleanup() }
    let gw = try Self.serve(env, soft: 200, hard: 4096)
    defer { Self.stop(gw.pid) }
    let text = try String(contentsOfFile: gw.log, encoding: .utf8)
    #expect(text.contains("descriptor limit raised from 200 to the hard limit 4096"), "\(text)")
    let limits = try String(contentsOfFile: "/proc/\(gw.pid)/limits", encoding: .utf8)
    #expect(limits.split(separator: "\n").contains { $0.hasPrefix("Max open files") && $0.contains("4096                 4096") }, "\(limits)")
  }

  @Test func descriptorExhaustionIsLoggedOnceAndTheGatewayRecovers() throws {
    let env = try CLIEnv("fd-exhaust")
    defer { env.cleanup() }
    let gw = try Self.serve(env, soft: 64, hard: 64)
    defer { Self.stop(gw.pid) }
    #expect(Self.health(gw.port)?.contains("200") == true)
    // Hold more connections than the gateway has descriptors; the backlog completes them for the kernel.
    var held: [Int32] = []
    for _ in 0..<120 {
      let fd = Self.connectTo(gw.port)
      if fd >= 0 { held.append(fd) }
    }
    sleep(4)  // NIO retries accept every second: several EMFILE failures
    let during = try String(contentsOfFile: gw.log, encoding: .utf8)
    let reports = during.components(separatedBy: "RESOURCE_EXHAUSTED: cannot accept connections: out of file descriptors").count - 1
    #expect(reports == 1, "logged once a minute, not per failure: \(during)")
    for fd in held { close(fd) }
    var healthy = false
    for _ in 0..<40 where !healthy {
      healthy = Self.health(gw.port)?.contains("200") == true
      if !healthy { usleep(250_000) }
    }
    #expect(healthy, "serves again once descriptors free up")
    #expect(Spawner.poll(gw.pid) == nil, "the gateway is still running")
  }
}
