import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import SandboxProtocol
import Synchronization

/// Records every network denial of the proxy (enforcement-and-ssh.md §1.4, rows "Denials → proposals"
/// and "Audit inside the sandbox"):
///
/// - at once, a WARN line in the sandbox's log (`openshell logs NAME`), target `openshell_sandbox::network`,
///   with fields `host`, `port`, `binary`, `reason`;
/// - aggregated by (host, port, binary, reason) with counts in a ``WindowedReport``: sent 10 s after the
///   first denial of a window (and at stop) to the gateway with `SubmitPolicyAnalysis` (summaries only),
///   which records one durable event per report. A failed report is merged back and retried 10 s later (at
///   most 200 distinct entries are kept; further destinations are in the log line only).
final class DenialReporter: Sendable {
  static let flushInterval = Duration.seconds(10)
  static let maxEntries = 200

  struct Key: Hashable, Sendable {
    var host: String
    var port: Int
    var binary: String
    var reason: String
  }

  struct Entry: Sendable {
    var count: UInt32
    var first: Date
    var last: Date
    var sha256: String
    var ancestors: [String]
    var cmdline: String
  }

  let sandboxID: String
  let logs: LogPusher
  private let report = WindowedReport<Key, Entry>(interval: flushInterval, maxEntries: maxEntries) { cur, e in
    cur.count &+= e.count
    cur.first = min(cur.first, e.first)
    cur.last = max(cur.last, e.last)
  }

  init(sandboxID: String, logs: LogPusher) {
    self.sandboxID = sandboxID
    self.logs = logs
  }

  /// `text` with C0/C1 control characters and DEL written as `\u{XX}`.
  static func printable(_ text: String) -> String {
    var out = ""
    for u in text.unicodeScalars {
      if u.value < 0x20 || (0x7f...0x9f).contains(u.value) { out += "\\u{\(String(u.value, radix: 16))}" } else { out.unicodeScalars.append(u) }
    }
    return out
  }

  /// A denial (new request refused, or an open connection closed by a policy change).
  func record(method rawMethod: String, host rawHost: String, port: Int, binary rawBinary: CallerBinary?, reason rawReason: String) {
    // Everything here can be chosen by the agent (a binary's path, a host, a method): control
    // characters are escaped so that a denial can never forge lines in the log or the audit.
    let method = Self.printable(rawMethod)
    let host = Self.printable(rawHost)
    let reason = Self.printable(rawReason)
    var binary = rawBinary
    if let b = rawBinary { binary?.path = Self.printable(b.path) }
    let who = binary.map { "\($0.path) (pid \($0.pid))" } ?? "an unidentified process"
    logs.log(
      "network denied: \(method) \(host):\(port) from \(who): \(reason)", level: "WARN", target: "openshell_sandbox::network",
      fields: ["host": host, "port": String(port), "binary": binary?.path ?? "", "reason": reason, "method": method])
    let key = Key(host: host, port: port, binary: binary?.path ?? "", reason: reason)
    let now = Date()
    report.record(key) { e in
      if e == nil {
        e = Entry(
          count: 0, first: now, last: now, sha256: binary?.sha256 ?? "", ancestors: binary?.ancestors ?? [],
          cmdline: binary?.cmdlinePaths.joined(separator: " ") ?? "")
      }
      e?.count &+= 1
      e?.last = now
    }
  }

  /// Reports each window 10 s after its first denial, until cancelled.
  func run(_ client: Openshell_V1_OpenShell.Client<RenewingTransport>, metadata: Metadata) async {
    await report.run { batch in try await self.send(batch, client, metadata: metadata) }
  }

  /// Sends what is pending now (once when the supervisor stops); on failure it stays pending.
  func flush(_ client: Openshell_V1_OpenShell.Client<RenewingTransport>, metadata: Metadata) async {
    await report.flush { batch in try await self.send(batch, client, metadata: metadata) }
  }

  /// One `SubmitPolicyAnalysis` with the window's summaries, oldest first; a failure is logged and rethrown
  /// (the entries are merged back).
  private func send(_ batch: [Key: Entry], _ client: Openshell_V1_OpenShell.Client<RenewingTransport>, metadata: Metadata) async throws {
    let request = Openshell_V1_SubmitPolicyAnalysisRequest.with { r in
      r.name = ProcessInfo.processInfo.environment["OPENSHELL_SANDBOX"] ?? ""
      r.analysisMode = "denials"
      r.summaries = batch.sorted { $0.value.first < $1.value.first }.prefix(200).map { k, e in
        .with {
          $0.sandboxID = sandboxID
          $0.host = k.host
          $0.port = UInt32(k.port)
          $0.binary = k.binary
          $0.ancestors = e.ancestors
          $0.denyReason = k.reason
          $0.firstSeenTime = .init(date: e.first)
          $0.lastSeenTime = .init(date: e.last)
          $0.count = e.count
          $0.totalCount = e.count
          $0.binarySha256 = e.sha256
          if !e.cmdline.isEmpty { $0.sampleCmdlines = [e.cmdline] }
          $0.denialStage = "l4"
        }
      }
    }
    do {
      _ = try await client.submitPolicyAnalysis(request, metadata: metadata)
    } catch {
      logs.log("denial report not delivered (retrying in 10 s): \(error)", level: "WARN")
      throw error
    }
  }
}
