import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import SandboxProtocol
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Runs the built `openshell` / `openshell-replay` binaries with a private XDG_CONFIG_HOME and
/// XDG_STATE_HOME.
struct CLIEnv {
  let root: URL
  var config: URL
  let state: URL
  var extraEnv: [String: String] = [:]
  /// Variables removed from the environment after `extraEnv` is applied (e.g. the XDG ones, to test the
  /// `$HOME` fallback).
  var unsetEnv: [String] = []

  init(_ label: String) throws {
    root = FileManager.default.temporaryDirectory.appendingPathComponent("openshell-cli-\(label)-\(UUID().uuidString.prefix(8))")
    config = root.appendingPathComponent("config")
    state = root.appendingPathComponent("state")
    try FileManager.default.createDirectory(at: config, withIntermediateDirectories: true)
    try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
  }

  struct Result: CustomStringConvertible {
    var code: Int32
    var out: String
    var err: String
    var seconds: Double
    var description: String { "exit \(code)\n--- stdout\n\(out)--- stderr\n\(err)" }
  }

  static let binDir: URL = {
    let env = ProcessInfo.processInfo.environment
    if let b = env["OPENSHELL_BIN"] { return URL(fileURLWithPath: b).deletingLastPathComponent() }
    var candidates: [URL] = []
    if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
      var u = URL(fileURLWithPath: exe).deletingLastPathComponent()
      for _ in 0..<4 {
        candidates.append(u)
        u.deleteLastPathComponent()
      }
    }
    candidates.append(Bundle.main.bundleURL.deletingLastPathComponent())
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    candidates += [repo.appendingPathComponent(".build-cli/debug"), repo.appendingPathComponent(".build/debug")]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0.appendingPathComponent("openshell").path) }
      ?? repo.appendingPathComponent(".build/debug")
  }()

  static var openshell: String {
    ProcessInfo.processInfo.environment["OPENSHELL_BIN"] ?? binDir.appendingPathComponent("openshell").path
  }
  static var replay: String { binDir.appendingPathComponent("openshell-replay").path }

  var environment: [String: String] {
    var env = ProcessInfo.processInfo.environment
    for k in ["OPENSHELL_GATEWAY", "OPENSHELL_GATEWAY_ENDPOINT", "OPENSHELL_REGISTRY_TOKEN", "OPENSHELL_REGISTRY_USERNAME"] {
      env.removeValue(forKey: k)
    }
    env["XDG_CONFIG_HOME"] = config.path
    env["XDG_STATE_HOME"] = state.path
    env["NO_COLOR"] = "1"
    env["OPENSHELL_REPLAY_BIN"] = Self.replay
    env["no_proxy"] = "127.0.0.1,localhost"
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.merge(extraEnv) { _, n in n }
    for k in unsetEnv { env.removeValue(forKey: k) }
    return env
  }

  /// Runs a binary with posix_spawn and waitpid (Foundation's Process can miss the exit of children
  /// started concurrently from several test tasks); stdout/stderr go to files, stdin is /dev/null.
  @discardableResult
  func run(_ args: [String], binary: String = CLIEnv.openshell, env extra: [String: String] = [:]) throws -> Result {
    let outPath = root.appendingPathComponent("out-\(UUID().uuidString)").path
    let errPath = root.appendingPathComponent("err-\(UUID().uuidString)").path
    defer {
      unlink(outPath)
      unlink(errPath)
    }
    let start = Date()
    // Spawner closes every descriptor above 2 in the child: a concurrently running test's socket (e.g.
    // one probing a port) must not leak into a gateway daemon and hold that port.
    let child: SpawnedProcess
    do {
      child = try Spawner.spawn(
        binary, args, environment: environment.merging(extra) { _, n in n },
        stdin: .null, stdout: .appendFile(outPath), stderr: .appendFile(errPath))
    } catch {
      throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: binary])
    }
    let code = Spawner.waitBlocking(child.pid)
    let seconds = Date().timeIntervalSince(start)
    return Result(
      code: code,
      out: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
      err: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "", seconds: seconds)
  }

  func replay(_ args: [String]) throws -> Result { try run(args, binary: Self.replay) }

  func dataDir(_ name: String) -> URL { state.appendingPathComponent("openshell/gateways/\(name)") }
  func archiveDir(_ name: String) -> URL { state.appendingPathComponent("openshell/archive/\(name)") }
  func registryDir(_ name: String) -> URL { config.appendingPathComponent("openshell/gateways/\(name)") }

  func metadata(_ name: String) -> [String: Any]? {
    guard let d = FileManager.default.contents(atPath: registryDir(name).appendingPathComponent("metadata.json").path) else { return nil }
    return try? JSONSerialization.jsonObject(with: d) as? [String: Any]
  }

  func json(_ r: Result) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]) ?? [:]
  }

  /// Stops every gateway started under this environment (by its pid file) and removes the temp dirs.
  func cleanup() {
    let gws = state.appendingPathComponent("openshell/gateways")
    for name in (try? FileManager.default.contentsOfDirectory(atPath: gws.path)) ?? [] {
      if let s = try? String(contentsOf: gws.appendingPathComponent("\(name)/gateway.pid"), encoding: .utf8),
        let pid = Int32(s.trimmingCharacters(in: .whitespacesAndNewlines)),
        let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
        String(decoding: cmd, as: UTF8.self).contains(gws.path)
      {
        kill(pid, SIGKILL)
      }
    }
    sweepSandboxes()
    try? FileManager.default.removeItem(at: root)
  }

  /// What a test that ended without deleting its sandboxes leaves on the host: processes that name this
  /// environment's state directory (bwrap names the sandbox's workspace; supervisors outlive a killed
  /// gateway) are killed, then the sandboxes' network namespaces (`openshell-<id>`, `openshell-<id>-<tag>`)
  /// are deleted once nothing runs in them (deleting a namespace removes its veth pair too).
  func sweepSandboxes() {
    let marker = state.path
    var killed = false
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
      guard let pid = Int32(entry), pid != getpid(), let cmd = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
      if String(decoding: cmd, as: UTF8.self).contains(marker) {
        kill(pid, SIGKILL)
        killed = true
      }
    }
    if killed { usleep(200_000) }
    let gws = state.appendingPathComponent("openshell/gateways")
    var ids: [String] = []
    for name in (try? FileManager.default.contentsOfDirectory(atPath: gws.path)) ?? [] {
      ids += (try? FileManager.default.contentsOfDirectory(atPath: gws.appendingPathComponent("\(name)/sandboxes").path)) ?? []
    }
    guard !ids.isEmpty, getuid() == 0 else { return }
    for ns in (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [] where ids.contains(where: { ns.hasPrefix("openshell-\($0)") }) {
      guard let pids = try? run(["netns", "pids", ns], binary: "/usr/sbin/ip"), pids.code == 0, pids.out.isEmpty else { continue }
      _ = try? run(["netns", "delete", ns], binary: "/usr/sbin/ip")
    }
  }

  // MARK: gRPC with the registry's bundle

  func withClient<R: Sendable>(_ name: String, _ body: @Sendable (Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>) async throws -> R) async throws
    -> R
  {
    let meta = metadata(name) ?? [:]
    let port = meta["gateway_port"] as? Int ?? 0
    let mtls = registryDir(name).appendingPathComponent("mtls")
    let security: HTTP2ClientTransport.Posix.TransportSecurity = .mTLS(
      certificateChain: [.file(path: mtls.appendingPathComponent("tls.crt").path, format: .pem)],
      privateKey: .file(path: mtls.appendingPathComponent("tls.key").path, format: .pem)
    ) { c in
      c.trustRoots = .certificates([.file(path: mtls.appendingPathComponent("ca.crt").path, format: .pem)])
    }
    let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: security)
    return try await withGRPCClient(transport: transport) { client in
      try await body(Openshell_V1_OpenShell.Client(wrapping: client))
    }
  }

  func createWorkspace(_ gateway: String, _ name: String) async throws {
    try await withClient(gateway) { c in
      var o = CallOptions.defaults
      o.timeout = .seconds(10)
      _ = try await c.createWorkspace(.with { $0.name = name }, options: o)
    }
  }

  func workspaces(_ gateway: String) async throws -> [String] {
    try await withClient(gateway) { c in
      var o = CallOptions.defaults
      o.timeout = .seconds(10)
      return try await c.listWorkspaces(.init(), options: o).workspaces.map(\.metadata.name)
    }
  }
}

/// Ports already handed out by `freePort()` in this test process.
private let handedOutPorts = Mutex<Set<Int>>([])

/// A TCP port on 127.0.0.1 that was free a moment ago, distinct per call.
///
/// Chosen at random from 20000–32767, below Linux's default ephemeral range (32768–60999,
/// `net.ipv4.ip_local_port_range`): a port the kernel hands out with `bind(0)` can be taken a moment later
/// as the source port of some outgoing connection (the tests open many), which made a gateway start fail
/// with "port already in use" in CI.
func freePort() -> Int {
  while true {
    let candidate = Int.random(in: 20000...32767)
    let fresh = handedOutPorts.withLock { $0.insert(candidate).inserted }
    guard fresh else { continue }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    let rc = withLoopbackAddress(candidate) { bind(fd, $0, $1) }
    close(fd)
    if rc == 0 { return candidate }
  }
}

/// Listens on `port` until closed (to occupy it).
func listenOn(_ port: Int) -> Int32 {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  var a = sockaddr_in()
  a.sin_family = sa_family_t(AF_INET)
  a.sin_port = in_port_t(UInt16(port)).bigEndian
  a.sin_addr.s_addr = inet_addr("127.0.0.1")
  _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
  listen(fd, 4)
  return fd
}

func fileMode(_ path: String) -> Int {
  ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? Int) ?? -1
}

/// Calls `body` with 127.0.0.1:`port` as a `sockaddr` and its length (for bind/connect).
func withLoopbackAddress(_ port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
  var a = sockaddr_in()
  a.sin_family = sa_family_t(AF_INET)
  a.sin_port = in_port_t(UInt16(port)).bigEndian
  a.sin_addr.s_addr = inet_addr("127.0.0.1")
  return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
}
