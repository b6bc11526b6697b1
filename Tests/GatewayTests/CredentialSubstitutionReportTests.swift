import EventLog
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import LogTools
import OpenShellAPI
import Testing

@testable import Gateway

/// `ReportCredentialSubstitutions` (openshell.audit.v1.SandboxAuditReports, issue 12): only a sandbox's own
/// identity may report, only for itself; a report becomes one `audit.credentials_substituted` event naming
/// the provider that holds each key; bad reports are INVALID_ARGUMENT. (The supervisor's side, from a real
/// sandbox, is CLITests' CredentialSubstitutionAuditTests.)
@Suite(.serialized) struct CredentialSubstitutionReportTests {
  /// Runs `body` with a SandboxAuditReports client presenting `cert`/`key` (mTLS).
  static func withReports<R: Sendable>(
    _ gw: TestGateway, cert: String, key: String, _ body: (Openshell_Audit_V1_SandboxAuditReports.Client<HTTP2ClientTransport.Posix>) async throws -> R
  ) async throws -> R {
    let ca = gw.pki + "/ca.crt"
    let security = HTTP2ClientTransport.Posix.TransportSecurity.mTLS(
      certificateChain: [.file(path: cert, format: .pem)], privateKey: .file(path: key, format: .pem)
    ) { $0.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
    let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: gw.port), transportSecurity: security)
    return try await withGRPCClient(transport: transport) { try await body(Openshell_Audit_V1_SandboxAuditReports.Client(wrapping: $0)) }
  }

  static func entry(_ key: String, host: String = "api.example", port: UInt32 = 443, count: UInt32 = 1) -> Openshell_Audit_V1_CredentialSubstitutionSummary {
    .with {
      $0.key = key; $0.host = host; $0.port = port; $0.binary = "/usr/bin/curl"; $0.count = count
      $0.firstSeenNs = 1_700_000_000_000_000_000; $0.lastSeenNs = 1_700_000_003_000_000_000
    }
  }

  /// The status code of `body`'s error (nil when it succeeded).
  static func code(_ body: () async throws -> Void) async -> (RPCError.Code?, String) {
    do {
      try await body()
      return (nil, "")
    } catch let e as RPCError {
      return (e.code, e.message)
    } catch {
      return (.unknown, "\(error)")
    }
  }

  @Test func onlyTheSandboxReportsForItselfAndTheEventNamesTheProvider() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    let (a, b) = try await gw.withClient { c in
      for (name, key) in [("svc", "SVC_TOKEN"), ("other", "OTHER_TOKEN"), ("late", "SVC_TOKEN")] {
        _ = try await c.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = name; $0.type = "generic"; $0.credentials = [key: "value-of-\(name)"]
            }
          })
      }
      var ids: [String] = []
      for (name, providers) in [("a", ["svc", "late"]), ("b", ["other"])] {
        let r = try await c.createSandbox(
          .with {
            $0.name = name; $0.spec = .with { $0.providers = providers }; $0.workspaceScope = .with { $0.workspace = "default" }
          })
        ids.append(r.sandbox.metadata.id)
      }
      return (ids[0], ids[1])
    }
    let (cert, key) = try gw.sandboxCertificate(a)
    let report = Openshell_Audit_V1_ReportCredentialSubstitutionsRequest.with {
      $0.sandboxID = a
      $0.substitutions = [Self.entry("SVC_TOKEN", count: 5), Self.entry("GONE_TOKEN", host: "", port: 0, count: 2)]
    }
    try await Self.withReports(gw, cert: cert, key: key) { c in
      _ = try await c.reportCredentialSubstitutions(report)
      // Another sandbox's id: refused, nothing recorded.
      var other = report
      other.sandboxID = b
      var r = await Self.code { _ = try await c.reportCredentialSubstitutions(other) }
      #expect(r.0 == .permissionDenied && r.1.contains("may not call ReportCredentialSubstitutions for sandbox \(b)"), "\(r)")
      // Bad reports.
      for (request, field) in [
        (Openshell_Audit_V1_ReportCredentialSubstitutionsRequest.with { $0.sandboxID = a }, "substitutions"),
        (.with { $0.substitutions = [Self.entry("NOT-A-KEY")] }, "substitutions[0].key"),
        (.with { $0.substitutions = [Self.entry("K", port: 70000)] }, "substitutions[0].port"),
        (.with { $0.substitutions = Array(repeating: Self.entry("K"), count: 501) }, "substitutions"),
      ] {
        r = await Self.code { _ = try await c.reportCredentialSubstitutions(request) }
        #expect(r.0 == .invalidArgument && r.1.contains(field), "\(field): \(r)")
      }
    }
    // The operator is not a sandbox supervisor.
    let r = await Self.code {
      try await Self.withReports(gw, cert: gw.pki + "/client.crt", key: gw.pki + "/client.key") { c in
        _ = try await c.reportCredentialSubstitutions(report)
      }
    }
    #expect(r.0 == .permissionDenied && r.1.contains("only available to sandbox supervisors"), "\(r)")

    // One event: the key's provider is the first attached one holding it; an unknown key has none.
    var q = AuditQuery()
    q.types = ["audit.credentials_substituted"]
    let all = try Audit.timeline(gw.running.store.log, query: q)
    #expect(all.count == 1, "\(all)")
    #expect(
      all.first?.summary
        == "credential placeholders substituted in 7 request(s): SVC_TOKEN of svc → api.example:443 by /usr/bin/curl ×5; GONE_TOKEN → (other destinations) by /usr/bin/curl ×2",
      "\(all)")
    #expect(all.first?.actor == "sandbox:\(a)" && all.first?.aggregate == "credentials/\(a)", "\(all)")
    q.provider = "svc"
    #expect(try Audit.timeline(gw.running.store.log, query: q).count == 1)
    q.provider = "late"
    #expect(try Audit.timeline(gw.running.store.log, query: q).isEmpty, "svc comes first in the merge order")
    q.provider = nil
    q.sandbox = "b"
    #expect(try Audit.timeline(gw.running.store.log, query: q).isEmpty)
    q.sandbox = "a"
    #expect(try Audit.timeline(gw.running.store.log, query: q).count == 1)
  }
}

/// The credential substitutions recorded for a sandbox, summed over its `audit.credentials_substituted`
/// events (read as their OCSF events): "KEY host:port binary" → count.
enum SubstitutionAudit {
  static func counts(_ log: EventLog, sandbox: String) throws -> [String: Int] {
    var q = AuditQuery()
    q.sandbox = sandbox
    q.types = ["audit.credentials_substituted"]
    var counts: [String: Int] = [:]
    for entry in try Audit.timeline(log, query: q, ocsf: true) {
      for line in entry.ocsf ?? [] {
        let e = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
        let dst = e["dst_endpoint"] as? [String: Any] ?? [:]
        let key = (e["unmapped"] as? [String: Any])?["credential_key"] as? String ?? "?"
        let binary = e["app_name"] as? String ?? ""
        counts["\(key) \(dst["hostname"] as? String ?? ""):\(dst["port"] as? Int ?? 0) \(binary)", default: 0] += e["count"] as? Int ?? 0
      }
    }
    return counts
  }

  /// Polls ``counts(_:sandbox:)`` until it equals `expected` (the supervisor reports 10 s after a window
  /// opens), at most `timeout`; returns the last counts.
  static func wait(_ log: EventLog, sandbox: String, for expected: [String: Int], timeout: Duration = .seconds(25)) async throws -> [String: Int] {
    let deadline = ContinuousClock.now + timeout
    var last: [String: Int] = [:]
    while ContinuousClock.now < deadline {
      last = try counts(log, sandbox: sandbox)
      if last == expected { return last }
      try await Task.sleep(for: .milliseconds(250))
    }
    return last
  }
}
