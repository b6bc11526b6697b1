import EventLog
import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import Testing
import X509

@testable import Gateway

/// Sandbox certificates are renewed before they expire, recorded as events, and taken into use by the
/// running supervisor without restarting the sandbox (issue 16). Lifetime 15 s: renewal at 10 s.
@Suite(
  "Sandbox certificate renewal", .serialized, .timeLimit(.minutes(3)),
  .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/bwrap"), "needs bubblewrap"))
struct SandboxCertificateRenewalTests {
  static let lifetime: TimeInterval = 15

  /// SHA-256 fingerprint of the PEM certificate at `path`.
  static func fingerprint(_ path: String) throws -> String {
    try CertificateFactory.fingerprint(Certificate(pemEncoded: String(contentsOfFile: path, encoding: .utf8)))
  }

  @Test("a sandbox stays usable past its first certificate's expiry, across a gateway restart; renewals are events")
  func renewal() async throws {
    let first = try await SandboxGateway.start { $0.sandboxCertificateLifetime = Self.lifetime }
    let dir = first.dataDirectory
    let port = first.port
    let (id, firstFingerprint, firstNotAfter) = try await first.withClient { c in
      let s = try await c.create("renew")
      try await c.wait("renew", .ready)
      let state = await first.running.store.state
      let fingerprint = try #require(state.activeCertificates["sandbox:\(s.metadata.id)"])
      let record = try #require(state.certificates[fingerprint])
      #expect(record.notAfterNs - Int64(record.issuedNs) < Int64(Self.lifetime + 1) * 1_000_000_000, "issued with the configured lifetime")
      return (s.metadata.id, fingerprint, Date(timeIntervalSince1970: TimeInterval(record.notAfterNs) / 1e9))
    }
    let run = dir + "/sandboxes/\(id)/run"
    // Keep the first identity to show that it really expires.
    let saved = try GatewayTestSupport.temporaryDirectory("firstcert")
    try FileManager.default.copyItem(atPath: run + "/tls.crt", toPath: saved + "/tls.crt")
    try FileManager.default.copyItem(atPath: run + "/tls.key", toPath: saved + "/tls.key")
    #expect(try Self.fingerprint(saved + "/tls.crt") == firstFingerprint)
    let pid = first.running.driver?.supervisorPID(id)

    // Past the first certificate's expiry.
    let wait = firstNotAfter.timeIntervalSinceNow + 1.5
    if wait > 0 { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
    try await first.withClient { c in
      let r = try await c.exec("renew", ["echo", "after-expiry"])
      #expect(r.out == "after-expiry\n" && r.exitCode == 0, "the supervisor's new calls use the renewed certificate: \(r)")
      // The expired identity no longer passes the TLS handshake; the current one does (and, being a
      // sandbox identity, is refused user RPCs by authorization, not by TLS).
      let expired = await rpcCode { try await first.withClient(cert: saved + "/tls.crt", key: saved + "/tls.key") { _ = try await $0.get("renew") } }
      #expect(expired != nil && expired != .permissionDenied, "expired certificate: \(String(describing: expired))")
      let current = await rpcCode { try await first.withClient(cert: run + "/tls.crt", key: run + "/tls.key") { _ = try await $0.get("renew") } }
      #expect(current == .permissionDenied)
    }
    // Recorded: at least one renewal after the first issuance, the newest is what the sandbox holds.
    let issued = try first.running.store.log.records(from: 1, filter: EventFilter(aggregate: AggregateRef(kind: "certificate", id: "sandbox:\(id)")))
    #expect(issued.count >= 2, "issuance + renewal events: \(issued.count)")
    let active = try #require(await first.running.store.state.activeCertificates["sandbox:\(id)"])
    #expect(active != firstFingerprint)
    #expect(try Self.fingerprint(run + "/tls.crt") == active)
    await first.stop()

    // A gateway restart makes the supervisor reconnect: a new handshake, possible only with the renewed identity.
    let second = try await SandboxGateway.start(dataDirectory: dir, port: port) { $0.sandboxCertificateLifetime = Self.lifetime }
    let restarted = ContinuousClock.now
    try await second.withClient { c in
      var result: Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>.ExecResult?
      while ContinuousClock.now - restarted < .seconds(10) {
        if let r = try? await c.exec("renew", ["echo", "reconnected"]) { result = r; break }
        try await Task.sleep(for: .milliseconds(100))
      }
      #expect(result?.out == "reconnected\n")
      #expect(try await c.get("renew").status.phase == .ready)
      #expect(second.running.driver?.supervisorPID(id) == pid, "the sandbox was not restarted")
      try await c.deleteAndWait("renew")
    }
    await second.stopEverything()
  }
}
