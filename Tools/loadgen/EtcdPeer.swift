import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SandboxProtocol
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The etcd peer of issue 14's durable control-plane write: an unmodified Debian `etcd` (3.4,
/// package `etcd-server`) started on loopback with random free ports and its data directory in a
/// temporary folder, driven with `etcdserverpb.KV/Put` through the client generated from
/// `Protos/etcd_kv.proto` (grpc-swift-2, the same client stack as ours). etcd listens in plain
/// HTTP/2 (no TLS); it fsyncs its WAL before a Put returns (etcd's default, like our `.sync` log).
final class EtcdPeer: Sendable {
  let pid: pid_t
  let clientPort: Int
  let dataDirectory: String

  private init(pid: pid_t, clientPort: Int, dataDirectory: String) {
    self.pid = pid
    self.clientPort = clientPort
    self.dataDirectory = dataDirectory
  }

  /// Starts `binary` (default `etcd` on PATH) and waits until a Put succeeds (at most 20 s).
  /// - Throws: `ValidationErrorText` when etcd is missing or does not answer.
  static func start(binary: String?) async throws -> EtcdPeer {
    guard let path = binary ?? which("etcd") else {
      throw ValidationErrorText("etcd not found: install Debian etcd-server (scripts/setup.sh) or pass --etcd-binary")
    }
    let dir = NSTemporaryDirectory() + "openshell-loadgen-etcd-\(getpid())"
    try? FileManager.default.removeItem(atPath: dir)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let (client, peer) = (freeLoopbackPort(), freeLoopbackPort())
    let args = [
      path, "--name", "bench", "--data-dir", dir + "/data",
      "--listen-client-urls", "http://127.0.0.1:\(client)", "--advertise-client-urls", "http://127.0.0.1:\(client)",
      "--listen-peer-urls", "http://127.0.0.1:\(peer)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)",
      "--initial-cluster", "bench=http://127.0.0.1:\(peer)", "--logger", "zap", "--log-outputs", "stderr",
    ]
    let pid = try spawn(args, output: dir + "/etcd.out")
    let etcd = EtcdPeer(pid: pid, clientPort: client, dataDirectory: dir)
    let deadline = ContinuousClock.now + .seconds(20)
    while ContinuousClock.now < deadline {
      if (try? await etcd.withClient { kv in _ = try await kv.put(.with { $0.key = Data("probe".utf8) }) }) != nil {
        return etcd
      }
      try await Task.sleep(for: .milliseconds(100))
    }
    let tail = ((try? String(contentsOfFile: dir + "/etcd.out", encoding: .utf8)) ?? "").split(separator: "\n").suffix(3)
    etcd.stop()
    throw ValidationErrorText("etcd did not answer within 20 s; its last output: \(tail.joined(separator: " | "))")
  }

  /// Runs `body` with a KV client over one plaintext HTTP/2 connection.
  func withClient<R: Sendable>(_ body: @escaping @Sendable (Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>) async throws -> R)
    async throws -> R
  {
    let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: clientPort), transportSecurity: .plaintext)
    return try await withGRPCClient(transport: transport) { grpc in try await body(Etcdserverpb_KV.Client(wrapping: grpc)) }
  }

  /// Put of `value` under unique keys `/registry/sandboxes/default/<n>` at `concurrency` for `seconds`;
  /// `applied` is etcd's own count (revision delta), the peer figure of the targets table.
  func putCell(concurrency: Int, seconds: Double, value: Data) async throws -> RunResult {
    let names = Ticket()
    let run = String(UInt32(truncatingIfNeeded: getpid()), radix: 36)
    return try await withClient { kv in
      var first: Int64 = 0
      for i in 0..<20 {
        first = try await kv.put(
          .with {
            $0.key = Data("/warmup/\(i)".utf8); $0.value = value
          }
        ).header.revision
      }
      let newest = Atomic<Int64>(0)
      var result = try await runConcurrent(concurrency: concurrency, seconds: seconds) {
        let key = "/registry/sandboxes/default/lg-\(run)-\(concurrency)-\(names.next())"
        do {
          let r = try await kv.put(
            .with {
              $0.key = Data(key.utf8); $0.value = value
            })
          newest.max(r.header.revision, ordering: .relaxed)
        } catch {
          // grpc-swift fails some calls to etcd's grpc-go at once ("Stream unexpectedly closed", never reaching
          // etcd: the revision counts only answered Puts); a pause keeps those from spinning on the cores.
          try await Task.sleep(for: .milliseconds(1))
          throw error
        }
      }
      result.applied = Int(newest.load(ordering: .relaxed) - first)
      result.note = "applied \(result.applied ?? 0)"
      return result
    }
  }

  /// SIGTERM, wait, remove the data directory.
  func stop() {
    kill(pid, SIGTERM)
    var status: Int32 = 0
    _ = waitpid(pid, &status, 0)
    try? FileManager.default.removeItem(atPath: dataDirectory)
  }
}

/// An error with a readable one-line message.
struct ValidationErrorText: Error, CustomStringConvertible {
  let description: String
  init(_ message: String) { description = message }
}

/// The first executable `name` on PATH.
func which(_ name: String) -> String? {
  let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
  return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to 0, read, closed).
func freeLoopbackPort() -> Int {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  defer { close(fd) }
  var addr = sockaddr_in()
  addr.sin_family = sa_family_t(AF_INET)
  addr.sin_addr.s_addr = inet_addr("127.0.0.1")
  addr.sin_port = 0
  var len = socklen_t(MemoryLayout<sockaddr_in>.size)
  _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
  _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
  return Int(UInt16(bigEndian: addr.sin_port))
}

/// Starts `argv` (through the project's `Spawner`) with stdout and stderr appended to `output`, stdin
/// from /dev/null.
func spawn(_ argv: [String], output: String, environment: [String: String]? = nil) throws -> pid_t {
  do {
    return try Spawner.spawn(
      argv[0], Array(argv.dropFirst()), environment: environment ?? ProcessInfo.processInfo.environment,
      stdout: .appendFile(output), stderr: .appendFile(output)
    ).pid
  } catch {
    throw ValidationErrorText("cannot start \(argv[0]): \(error)")
  }
}
