import EventLog
import Foundation
import GRPCCore
import Projections

#if canImport(Glibc)
  import Glibc
#endif

/// A gateway run as its own process (`openshell gateway serve --compute-driver none`, mTLS on a free
/// loopback port): what issue 14's restart and RSS rows measure, the real executable rather than the
/// in-process gateway of the throughput cells.
struct GatewayProcess {
  let pid: pid_t
  let port: Int
  let dataDirectory: String
  /// When the process was spawned.
  let started: ContinuousClock.Instant

  /// Spawns the gateway; output goes to `DATA.out` beside the data directory.
  static func start(binary: String, dataDirectory: String) throws -> GatewayProcess {
    let port = freeLoopbackPort()
    let t = ContinuousClock.now
    let pid = try spawn(
      [binary, "gateway", "serve", "--data-dir", dataDirectory, "--port", "\(port)", "--compute-driver", "none"],
      output: dataDirectory + ".out")
    return GatewayProcess(pid: pid, port: port, dataDirectory: dataDirectory, started: t)
  }

  /// Resident set size (VmRSS) in bytes, from /proc/PID/status.
  func rssBytes() -> Double {
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
      let kb = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return 0 }
    return kb * 1024
  }

  /// Whether the process has exited (reaped here).
  func exited() -> Bool {
    var status: Int32 = 0
    return waitpid(pid, &status, WNOHANG) == pid
  }

  /// Waits until something accepts TCP connections on the port (1 ms polls), at most `timeout`.
  /// - Throws: when the process exits first or the timeout passes.
  func waitListening(timeout: Duration = .seconds(120)) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if Self.connects(port: port) { return }
      if exited() { throw ValidationErrorText("the gateway exited before serving; see \(dataDirectory).out") }
      try await Task.sleep(for: .milliseconds(1))
    }
    throw ValidationErrorText("the gateway did not listen within \(timeout); see \(dataDirectory).out")
  }

  static func connects(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    let len = socklen_t(MemoryLayout<sockaddr_in>.size)
    return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) } } == 0
  }

  /// SIGTERM (graceful: the gateway writes its projection snapshot), then waits for the exit.
  func stop() {
    kill(pid, SIGTERM)
    var status: Int32 = 0
    _ = waitpid(pid, &status, 0)
  }
}

/// Writes a log of `total` records for the restart measure, straight into `DATA/log` (the gateway is
/// stopped): sandbox lifecycles of five events each (requested, provisioning, ready, deleting, deleted)
/// with fresh ids and request ids; every 200th sandbox stays (1,000 live per 1M events), so the state
/// is a realistic projection (1,000 sandboxes, the 100k-request id window) while the log is long.
enum RestartLog {
  static func fill(dataDirectory: String, total: Int) throws {
    let log = try EventLog.open(directory: dataDirectory + "/log")
    defer { log.close() }
    var batch: [NewEvent] = []
    var n = 0
    func add(_ kind: GatewayEvent.OneOf_Kind, actor: String) {
      batch.append(GatewayEvent(kind).newEvent(actor: actor, requestID: UUID().uuidString.lowercased()))
    }
    while log.headSeq < UInt64(total) {
      let id = UUID().uuidString.lowercased()
      add(
        .sandboxRequested(
          .with {
            $0.id = id; $0.name = "rs-\(n)"; $0.workspace = "default"; $0.labels = ["bench": "restart"]
          }), actor: "operator")
      add(
        .sandboxProvisioning(
          .with {
            $0.id = id; $0.driver = "local"
          }), actor: "system")
      add(
        .sandboxReady(
          .with {
            $0.id = id; $0.hostKeyFingerprint = "SHA256:" + String(repeating: "x", count: 43)
          }), actor: "system")
      if n % 200 != 0 {
        add(.sandboxDeleting(.with { $0.id = id }), actor: "operator")
        add(.sandboxDeleted(.with { $0.id = id }), actor: "system")
      }
      n += 1
      if batch.count >= 4096 || log.headSeq + UInt64(batch.count) >= UInt64(total) {
        let room = total - Int(log.headSeq)
        try log.appendSync(Array(batch.prefix(max(room, 0))))
        batch.removeAll(keepingCapacity: true)
      }
    }
  }
}
