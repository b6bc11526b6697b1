import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import SandboxProtocol
import Synchronization

/// Records the proxy's credential placeholder substitutions for the audit trail (issue 12, credential
/// disclosure: "every placeholder substitution summary from the proxy"; enforcement-and-ssh.md §1.4, rows
/// "Credential injection" and "Audit inside the sandbox").
///
/// A substitution is a request (or a WebSocket message) that left the proxy with the value of a provider
/// key in place of its placeholder: only on inspected connections the policy allowed; a placeholder on
/// an uninspected tunnel (`tls: skip`, L4) stays a placeholder and is never recorded. They are counted
/// per (key, host, port, binary) — one request carrying two keys counts once for each — and sent to the
/// gateway with `ReportCredentialSubstitutions` 10 s after the first substitution of a window (so at most
/// one report per 10 s, and a burst shorter than that is one report), and at once when the supervisor
/// stops (``flush(_:metadata:)``); the gateway records one `audit.credentials_substituted` event per report.
/// Key names only: a value never reaches this type. At most ``maxEntries`` destinations are itemised per
/// report; further ones are counted per key with an empty host ("other destinations"), so no use of a key
/// goes uncounted. A failed report is merged back and retried at the next flush (``WindowedReport``).
final class SubstitutionReporter: Sendable {
  static let flushInterval = Duration.seconds(10)
  /// Itemised entries per report (the gateway accepts 500; the overflow entries, one per key, come on top
  /// of these but keys are few).
  static let maxEntries = 400

  struct Key: Hashable, Sendable {
    var key: String
    var host: String
    var port: Int
    var binary: String
  }

  struct Entry: Sendable {
    var count: UInt32
    var first: Date
    var last: Date
  }

  let sandboxID: String
  let logs: LogPusher
  /// Beyond ``maxEntries`` destinations, a key's uses are counted under its "other destinations" entry.
  private let report = WindowedReport<Key, Entry>(
    interval: flushInterval, maxEntries: maxEntries, overflow: { Key(key: $0.key, host: "", port: 0, binary: "") },
    merge: { cur, e in
      cur.count &+= e.count
      cur.first = min(cur.first, e.first)
      cur.last = max(cur.last, e.last)
    })

  init(sandboxID: String, logs: LogPusher) {
    self.sandboxID = sandboxID
    self.logs = logs
  }

  /// One request (or message) to `host:port` from `binary` carried the values of `keys`.
  func record(keys: Set<String>, host rawHost: String, port: Int, binary: CallerBinary?) {
    guard !keys.isEmpty else { return }
    // The host and the binary's path are the agent's choice: control characters escaped, as for denials.
    let host = DenialReporter.printable(rawHost)
    let path = binary.map { DenialReporter.printable($0.path) } ?? ""
    let now = Date()
    for key in keys {
      report.record(Key(key: key, host: host, port: port, binary: path)) { e in
        if e == nil { e = Entry(count: 0, first: now, last: now) }
        e?.count &+= 1
        e?.last = now
      }
    }
  }

  /// Whether anything waits to be reported.
  var isEmpty: Bool { report.isEmpty }

  /// Reports each window 10 s after it opened; a window that could not be delivered is tried again 10 s later.
  func run(_ client: Openshell_Audit_V1_SandboxAuditReports.Client<RenewingTransport>, metadata: Metadata) async {
    await report.run { batch in try await self.send(batch, client, metadata: metadata) }
  }

  /// Sends what is pending now (one report, after the one in flight, if any); on failure it stays pending
  /// for the next flush.
  func flush(_ client: Openshell_Audit_V1_SandboxAuditReports.Client<RenewingTransport>, metadata: Metadata) async {
    await report.flush { batch in try await self.send(batch, client, metadata: metadata) }
  }

  /// One `ReportCredentialSubstitutions` with the window's entries, oldest first; a failure is logged and
  /// rethrown (the entries are merged back).
  private func send(
    _ batch: [Key: Entry], _ client: Openshell_Audit_V1_SandboxAuditReports.Client<RenewingTransport>, metadata: Metadata
  ) async throws {
    let request = Openshell_Audit_V1_ReportCredentialSubstitutionsRequest.with { r in
      r.sandboxID = sandboxID
      r.substitutions = batch.sorted { ($0.value.first, $0.key.key, $0.key.host) < ($1.value.first, $1.key.key, $1.key.host) }.map { k, e in
        .with {
          $0.key = k.key
          $0.host = k.host
          $0.port = UInt32(clamping: k.port)
          $0.binary = k.binary
          $0.count = e.count
          $0.firstSeenNs = UInt64(max(0, e.first.timeIntervalSince1970 * 1e9))
          $0.lastSeenNs = UInt64(max(0, e.last.timeIntervalSince1970 * 1e9))
        }
      }
    }
    do {
      _ = try await client.reportCredentialSubstitutions(request, metadata: metadata)
    } catch {
      logs.log("credential substitution report not delivered (retrying in 10 s): \(error)", level: "WARN")
      throw error
    }
  }
}
