import Foundation
import GRPCCore
import Gateway
import OpenShellAPI
import Testing

/// A real OTLP/gRPC logs receiver (Tests/audit-tools/otlp_receiver.py: opentelemetry-proto + grpcio) in a
/// child process; what it receives is in ``records``.
final class OTLPReceiver: @unchecked Sendable {
  let process = Process()
  let out: String
  let port: Int

  static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
  static let python = repo + "/.build-venv-audit/bin/python"

  init() throws {
    guard FileManager.default.isExecutableFile(atPath: Self.python) else {
      throw RPCError(code: .failedPrecondition, message: "\(Self.python) missing: run scripts/setup.sh")
    }
    out = FileManager.default.temporaryDirectory.appendingPathComponent("otlp-\(UUID().uuidString).jsonl").path
    process.executableURL = URL(fileURLWithPath: Self.python)
    process.arguments = [Self.repo + "/Tests/audit-tools/otlp_receiver.py", out]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    var text = ""
    let deadline = Date().addingTimeInterval(30)
    while !text.contains("\n"), Date() < deadline {
      let chunk = pipe.fileHandleForReading.availableData
      if chunk.isEmpty { break }
      text += String(decoding: chunk, as: UTF8.self)
    }
    guard let line = text.split(separator: "\n").first, line.hasPrefix("listening "), let p = Int(line.dropFirst(10)) else {
      process.terminate()
      throw RPCError(code: .internalError, message: "the OTLP receiver did not start: \(text)")
    }
    port = p
  }

  /// The log records received so far (one JSON object each).
  var records: [[String: Any]] {
    guard let text = try? String(contentsOfFile: out, encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
  }

  var rawText: String { (try? String(contentsOfFile: out, encoding: .utf8)) ?? "" }

  /// Kills the receiver (grpcio's server does not end on SIGTERM) and waits for it.
  func stop() {
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
  }
}

/// The export of the audit trail as OTLP log records (issue 12).
@Suite("OTLP audit export", .serialized, .timeLimit(.minutes(3)))
struct OTLPExportTests {
  /// The value of a Prometheus counter (summed over its label sets that contain `labels`) in the exposition
  /// `GET /metrics` serves.
  static func counter(_ gw: TestGateway, _ name: String, labels: String = "") throws -> Int {
    gw.running.server.metrics.exposition().split(separator: "\n")
      .filter { ($0.hasPrefix(name + " ") || $0.hasPrefix(name + "{")) && (labels.isEmpty || $0.contains(labels)) }
      .compactMap { $0.split(separator: " ").last.flatMap { Double($0) }.map { Int($0) } }
      .reduce(0, +)
  }

  @Test("records reach a real OTLP/gRPC receiver with their attributes and OCSF bodies, never a secret")
  func recordsAreDelivered() async throws {
    let receiver = try OTLPReceiver()
    defer { receiver.stop() }
    let canary = "canary-\(UUID().uuidString)"
    let gw = try await TestGateway.start { c in
      var s = OTLPExportSettings(endpoint: "http://127.0.0.1:\(receiver.port)")
      s.scheduleDelay = .milliseconds(100)
      c.otlpExport = s
      c.refusalWindow = .seconds(2)
    }
    let sandboxID = try await gw.withClient { api in
      _ = try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "gl"; $0.type = "gitlab"; $0.credentials = ["GITLAB_TOKEN": canary]
          }
        })
      _ = try await api.getProviderCredentials(
        .with {
          $0.name = "gl"; $0.credentialKeys = ["GITLAB_TOKEN"]
        })
      return try await api.createSandbox(
        .with {
          $0.name = "sub"; $0.spec = .with { $0.providers = ["gl"] }; $0.workspaceScope = .with { $0.workspace = "default" }
        }
      ).sandbox.metadata.id
    }
    // A credential substitution report of that sandbox's supervisor (issue 12).
    let (subCert, subKey) = try gw.sandboxCertificate(sandboxID)
    try await CredentialSubstitutionReportTests.withReports(gw, cert: subCert, key: subKey) { c in
      _ = try await c.reportCredentialSubstitutions(
        .with {
          $0.sandboxID = sandboxID; $0.substitutions = [CredentialSubstitutionReportTests.entry("GITLAB_TOKEN", host: "gitlab.example", count: 4)]
        })
    }
    let (cert, key) = try gw.sandboxCertificate("sb-otlp")
    try await gw.withClient(certificate: cert, key: key) { api in
      for _ in 0..<5 { _ = await rpcCode { _ = try await api.listSandboxes(.init()) } }
    }
    var records: [[String: Any]] = []
    func attrs(_ r: [String: Any]) -> [String: Any] { r["attributes"] as? [String: Any] ?? [:] }
    func of(_ type: String) -> [[String: Any]] { records.filter { attrs($0)["openshell.event_type"] as? String == type } }
    // Five refusals: one event with "count":5 when they fall into one window; on a loaded machine
    // they may span two windows, so the counts are summed.
    func refusedCount() -> Int {
      of("audit.access_refused").compactMap { r -> Int? in
        guard let b = r["body"] as? String, let r = b.range(of: #""count":(\d+)"#, options: .regularExpression) else { return nil }
        return Int(b[r].dropFirst(8))
      }.reduce(0, +)
    }
    let deadline = Date().addingTimeInterval(20)
    while Date() < deadline {
      records = receiver.records
      if !of("provider.created").isEmpty, !of("audit.credentials_disclosed").isEmpty, !of("audit.credentials_substituted").isEmpty, refusedCount() >= 5 {
        break
      }
      try await Task.sleep(for: .milliseconds(100))
    }
    await gw.stop()

    let created = try #require(of("provider.created").first, "received: \(records.map { attrs($0)["openshell.event_type"] ?? "?" })")
    #expect((attrs(created)["openshell.actor"] as? String)?.hasPrefix("operator:CN=") == true)
    #expect(attrs(created)["ocsf.class_uid"] as? String == "6003")
    #expect(attrs(created)["ocsf.type_uid"] as? String == "600301")
    #expect(Int(attrs(created)["openshell.seq"] as? String ?? "") ?? 0 > 0)
    #expect((created["resource"] as? [String: Any])?["service.name"] as? String == "openshell-gateway")
    #expect(created["severity_text"] as? String == "info")
    let body = try #require((created["body"] as? String).flatMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
    #expect(body["class_uid"] as? Int == 6003 && (body["metadata"] as? [String: Any])?["event_code"] as? String == "provider.created")

    let disclosed = try #require(of("audit.credentials_disclosed").first)
    #expect((disclosed["body"] as? String)?.contains("GITLAB_TOKEN") == true)
    let substituted = try #require(of("audit.credentials_substituted").first)
    #expect(attrs(substituted)["ocsf.class_uid"] as? String == "4001" && attrs(substituted)["ocsf.type_uid"] as? String == "400106")
    #expect(attrs(substituted)["openshell.actor"] as? String == "sandbox:\(sandboxID)")
    let subBody = (substituted["body"] as? String) ?? ""
    #expect(subBody.contains("\"credential_key\":\"GITLAB_TOKEN\"") && subBody.contains("\"count\":4") && subBody.contains("gitlab.example"), "\(subBody)")
    let refused = try #require(of("audit.access_refused").first)
    #expect(attrs(refused)["openshell.actor"] as? String == "sandbox:sb-otlp")
    #expect(attrs(refused)["ocsf.class_uid"] as? String == "3003")
    #expect(refused["severity_text"] as? String == "warning")
    #expect(refusedCount() == 5, "refusal events: \(of("audit.access_refused").map { $0["body"] ?? "" })")

    // Seqs arrive once each, and no secret crosses the wire.
    let seqs = records.compactMap { attrs($0)["openshell.seq"] as? String }
    #expect(Set(seqs).count == seqs.count)
    #expect(!receiver.rawText.contains(canary))
  }

  @Test("a collector that is down neither blocks nor slows writes; the lost records are counted in /metrics")
  func aDeadCollectorNeverBlocksWrites() async throws {
    let dead = freeLoopbackPort()  // nothing listens there
    let gw = try await TestGateway.start { c in
      var s = OTLPExportSettings(endpoint: "http://127.0.0.1:\(dead)")
      s.queueSize = 64
      s.maxBatch = 16
      s.scheduleDelay = .milliseconds(50)
      s.exportTimeout = .seconds(1)
      c.otlpExport = s
    }
    let writes = 400
    var slowest: Duration = .zero
    let clock = ContinuousClock()
    let started = clock.now
    try await gw.withClient { api in
      for i in 0..<writes {
        let t0 = clock.now
        _ = try await api.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "p\(i)"; $0.type = "generic"; $0.credentials = ["K": "v"]
            }
          })
        slowest = max(slowest, clock.now - t0)
      }
    }
    let total = clock.now - started
    // A write that waited on the exporter would take at least its 1 s export timeout.
    #expect(slowest < .milliseconds(900), "slowest write \(slowest)")
    #expect(total < .seconds(60), "\(writes) writes took \(total)")
    // Let the exporter try (and fail) a few batches, then read the counters through GET /metrics.
    var dropped = 0
    let deadline = Date().addingTimeInterval(20)
    while Date() < deadline {
      dropped = try Self.counter(gw, "openshell_audit_export_dropped_total")
      if dropped >= writes - 64 { break }
      try await Task.sleep(for: .milliseconds(200))
    }
    let queued = try Self.counter(gw, "openshell_audit_export_queued_total")
    #expect(queued >= writes, "every record was handed to the exporter: \(queued)")
    #expect(dropped >= writes - 64, "all but at most a queue's worth are counted as dropped: \(dropped) of \(queued)")
    #expect(dropped <= queued)
    #expect(try Self.counter(gw, "openshell_audit_export_dropped_total", labels: "reason=\"queue_full\"") > 0)
    // Stopping does not wait on the dead collector beyond the export timeout.
    let t0 = clock.now
    await gw.stop()
    #expect(clock.now - t0 < .seconds(5), "stop took \(clock.now - t0)")
  }
}

/// A loopback TCP port nothing listens on (bound, then closed).
func freeLoopbackPort() -> Int {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  defer { close(fd) }
  var addr = sockaddr_in()
  addr.sin_family = sa_family_t(AF_INET)
  addr.sin_addr.s_addr = inet_addr("127.0.0.1")
  addr.sin_port = 0
  var len = socklen_t(MemoryLayout<sockaddr_in>.size)
  _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
  _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
  return Int(UInt16(bigEndian: addr.sin_port))
}
