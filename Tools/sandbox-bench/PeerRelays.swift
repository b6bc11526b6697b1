import Dispatch
import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// Well-known relays on the policy proxy's own path, for `--proxy` (``ProxyBench``): HAProxy (`mode tcp`,
/// kernel `splice(2)` both ways, one thread) and nginx `stream` (userspace copy, one worker), each as
/// packaged and with our relay's queue limits (256 KiB toward the client), each listening on the host
/// side of the benchmark sandbox's veth pair (``PeerPath``) and forwarding to the same upstream on
/// 127.0.0.1 as the proxy. The same python3 client in the sandbox sends a plain GET to the relay: these
/// are TCP relays, so they do less per connection than the proxy (no CONNECT, no caller identification,
/// policy or DNS/SSRF check), but the same per byte — a second TCP connection beside the client's.
///
/// A relay whose program is missing is left out with one line in ``skipped``; the others still run.
/// ``stop()`` ends the relays and closes the path again; the benchmark's SIGINT/SIGTERM cleanup calls it too
/// (``active``).
final class PeerRelays: @unchecked Sendable {
  /// One running relay: `name` for the tables, `setting` says how it is configured.
  struct Relay {
    let name: String
    let setting: String
    let port: Int
    let pid: pid_t
  }

  let path: PeerPath
  let relays: [Relay]
  /// One line per relay left out, e.g. "haproxy not installed: peer skipped".
  let skipped: [String]
  private let directory: String
  private let lock = NSLock()
  private var stopped = false
  /// The running relays, for the benchmark's SIGINT/SIGTERM cleanup (``InterruptCleanup``).
  nonisolated(unsafe) static var active: PeerRelays?

  static let haproxy = "/usr/sbin/haproxy"
  static let nginx = "/usr/sbin/nginx"
  static let nginxStream = "/usr/lib/nginx/modules/ngx_stream_module.so"

  /// Opens the sandbox's path (namespace `namespace`, veth host address `hostAddress`) to the relays and
  /// starts every installed relay there in front of `127.0.0.1:upstreamPort`; `extraPorts` are opened too
  /// (the upstream's own listener on `hostAddress`, for the path without a relay).
  /// - Throws: a path set-up or relay start that failed (with the relay's log); then nothing is left.
  init(upstreamPort: Int, namespace: String, hostAddress: String, extraPorts: [Int]) throws {
    var skipped: [String] = []
    var wanted: [String] = []
    if FileManager.default.isExecutableFile(atPath: Self.haproxy) {
      wanted += ["HAProxy", "HAProxy 256K"]
    } else {
      skipped.append("haproxy not installed: peer skipped")
    }
    if FileManager.default.isExecutableFile(atPath: Self.nginx) && FileManager.default.fileExists(atPath: Self.nginxStream) {
      wanted += ["nginx", "nginx 256K"]
    } else {
      skipped.append("nginx or its stream module (libnginx-mod-stream) not installed: peer skipped")
    }
    self.skipped = skipped
    let ports = try wanted.map { _ in try Self.freePort() }
    let directory = NSTemporaryDirectory() + "oshbench-peer-\(getpid())"
    try? FileManager.default.removeItem(atPath: directory)
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let path: PeerPath
    do {
      path = try PeerPath(namespace: namespace, hostAddress: hostAddress, ports: ports + extraPorts)
    } catch {
      try? FileManager.default.removeItem(atPath: directory)
      throw error
    }
    var started: [Relay] = []
    do {
      for (name, port) in zip(wanted, ports) {
        switch name {
        case "nginx", "nginx 256K": started.append(try Self.startNginx(path, directory, port: port, upstream: upstreamPort, tuned: name != "nginx"))
        default: started.append(try Self.startHAProxy(path, directory, port: port, upstream: upstreamPort, tuned: name != "HAProxy"))
        }
      }
    } catch {
      for r in started { Self.end(r.pid) }
      path.tearDown()
      try? FileManager.default.removeItem(atPath: directory)
      throw error
    }
    self.directory = directory
    self.path = path
    relays = started
    Self.active = self
  }

  /// HAProxy in TCP mode, one thread (a connection is served by one thread anyway; the other core is the
  /// server's and the client's), kernel splice in both directions (HAProxy sets TCP_NODELAY on both
  /// sockets itself). Pipes of the kernel's default size (64 KiB) and autotuned socket buffers; `tuned`:
  /// the relay's own queue limits (`crelay.c`): 256 KiB pipes and a 256 KiB send buffer toward the client.
  private static func startHAProxy(_ path: PeerPath, _ directory: String, port: Int, upstream: Int, tuned: Bool) throws -> Relay {
    let tuning = tuned ? "\n  tune.pipesize 262144\n  tune.sndbuf.client 262144" : ""
    let config = """
      global
        nbthread 1
        maxconn 64\(tuning)
      defaults
        mode tcp
        timeout connect 5s
        timeout client 60s
        timeout server 60s
        option splice-request
        option splice-response
      listen bench
        bind \(path.hostAddress):\(port)
        server upstream 127.0.0.1:\(upstream)

      """
    let version =
      (try? PeerPath.command([Self.haproxy, "-v"]))?.split(separator: "\n").first.map { String($0.split(separator: " ").dropFirst(2).first ?? "?") } ?? "?"
    let file = directory + (tuned ? "/haproxy-256k.cfg" : "/haproxy.cfg")
    try config.write(toFile: file, atomically: true, encoding: .utf8)
    let setting =
      "HAProxy \(version), mode tcp, nbthread 1, option splice-request + splice-response, "
      + (tuned ? "tune.pipesize + tune.sndbuf.client 256 KiB (as our relay)" : "default pipe size (64 KiB) and socket buffers")
    return try start(path, directory, tuned ? "HAProxy 256K" : "HAProxy splice", setting, port, [Self.haproxy, "-db", "-f", file])
  }

  /// nginx `stream` with one worker process (master_process on, as deployed), TCP_NODELAY: a userspace copy
  /// (recv + send) per chunk of the default 16 KiB proxy buffer; `tuned`: our relay's queue limits instead,
  /// a 256 KiB buffer and a 256 KiB send buffer toward the client (`listen … sndbuf=256k`).
  private static func startNginx(_ path: PeerPath, _ directory: String, port: Int, upstream: Int, tuned: Bool) throws -> Relay {
    let name = tuned ? "nginx-256k" : "nginx"
    let config = """
      load_module \(Self.nginxStream);
      daemon off;
      worker_processes 1;
      pid \(directory)/\(name).pid;
      error_log \(directory)/\(name).log warn;
      events { worker_connections 64; }
      stream {
        server {
          listen \(path.hostAddress):\(port)\(tuned ? " sndbuf=256k" : "");
          proxy_pass 127.0.0.1:\(upstream);
          tcp_nodelay on;\(tuned ? "\n    proxy_buffer_size 256k;" : "")
        }
      }

      """
    let version = (try? PeerPath.command([Self.nginx, "-v"]))?.split(separator: "/").last.map(String.init) ?? "?"
    let file = directory + "/\(name).conf"
    try config.write(toFile: file, atomically: true, encoding: .utf8)
    let setting =
      "nginx \(version) stream, worker_processes 1, tcp_nodelay on, "
      + (tuned ? "proxy_buffer_size 256k + listen sndbuf=256k (as our relay; userspace copy)" : "proxy_buffer_size 16k (default; userspace copy)")
    return try start(
      path, directory, tuned ? "nginx 256K" : "nginx stream", setting, port, [Self.nginx, "-p", directory, "-e", "\(directory)/\(name).log", "-c", file])
  }

  /// Starts `argv` (its output to `<directory>/<name>.out`) and waits until it accepts on the host side.
  private static func start(_ path: PeerPath, _ directory: String, _ name: String, _ setting: String, _ port: Int, _ argv: [String]) throws -> Relay {
    let log = directory + "/" + name.replacingOccurrences(of: " ", with: "-") + ".out"
    let p = try Spawner.spawn(
      argv[0], Array(argv.dropFirst()), environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], stdout: .appendFile(log), stderr: .appendFile(log))
    let deadline = ContinuousClock.now + .seconds(10)
    while !accepts(path.hostAddress, port) {
      let output = { String(decoding: FileManager.default.contents(atPath: log) ?? Data(), as: UTF8.self) }
      if let code = Spawner.poll(p.pid) { throw LauncherBench.BenchError("\(name) exited \(code) at start: \(output())") }
      if ContinuousClock.now > deadline {
        end(p.pid)
        throw LauncherBench.BenchError("\(name) did not listen on \(path.hostAddress):\(port) within 10 s: \(output())")
      }
      usleep(10_000)
    }
    return Relay(name: name, setting: setting, port: port, pid: p.pid)
  }

  /// CPU time (ns) of a relay so far: its process and its children (nginx's worker under its master).
  static func cpuNanoseconds(_ pid: pid_t) -> Int64 {
    let children = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/task/\(pid)/children") ?? Data(), as: UTF8.self)
    return ProxyBench.processCPUNanoseconds(pid) + children.split(separator: " ").compactMap { Int32($0) }.map(ProxyBench.processCPUNanoseconds).reduce(0, +)
  }

  /// Ends the relays and removes the path and the configuration directory. Idempotent.
  func stop() {
    guard
      lock.withLock({ () -> Bool in
        defer { stopped = true }; return !stopped
      })
    else { return }
    for r in relays { Self.end(r.pid) }
    path.tearDown()
    try? FileManager.default.removeItem(atPath: directory)
    Self.active = nil
  }

  /// SIGTERM, up to 2 s for the exit, then SIGKILL; reaps the process.
  static func end(_ pid: pid_t) {
    kill(pid, SIGTERM)
    for _ in 0..<200 where Spawner.poll(pid) == nil { usleep(10_000) }
    if Spawner.poll(pid) == nil {
      kill(pid, SIGKILL)
      _ = Spawner.waitBlocking(pid)
    }
  }

  /// Whether something accepts TCP connections on `host:port`.
  static func accepts(_ host: String, _ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = in_port_t(UInt16(port).bigEndian)
    inet_pton(AF_INET, host, &a.sin_addr)
    return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
      == 0
  }

  /// A TCP port the kernel calls free now (bound to port 0 and released; the relays bind a few ms later).
  static func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw LauncherBench.BenchError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &a) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else { throw LauncherBench.BenchError("cannot pick a free port: \(String(cString: strerror(errno)))") }
    return Int(UInt16(bigEndian: a.sin_port))
  }
}
