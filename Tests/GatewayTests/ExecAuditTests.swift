import EventLog
import Foundation
import GRPCCore
import Gateway
import OpenShellAPI
import Projections
import Testing

/// Exec sessions and the supervisor's credential fetch are on record (issue 12), with secrets redacted.
extension ProviderDeliveryTests {
  @Test func execSessionsAndDeliveriesAreAuditedWithoutSecrets() async throws {
    let canary = "sk-audit-\(UUID().uuidString)"
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "audited"; $0.type = "claude"; $0.credentials = ["ANTHROPIC_API_KEY": canary]
          }
        })
      let sandbox = try await c.createSandbox(
        .with {
          $0.name = "exec-audit"
          $0.spec = .with { $0.providers = ["audited"] }
          $0.workspaceScope = .with { $0.workspace = "default" }
        }
      ).sandbox
      try await c.wait("exec-audit", .ready)
      let ok = try await c.exec("exec-audit", ["sh", "-c", "echo ran", "--token=\(canary)"])
      #expect(ok.exitCode == 0 && ok.out == "ran\n")
      let three = try await c.exec("exec-audit", ["sh", "-c", "exit 3"])
      #expect(three.exitCode == 3)

      let log = gw.running.store.log
      let records = try log.records(from: 1, filter: EventFilter(aggregate: AggregateRef(kind: "exec", id: sandbox.metadata.id)))
      let events = try records.map { try GatewayEvent.decode($0) }
      let started = events.compactMap { e -> Openshell_Events_V1_ExecStarted? in if case .execStarted(let s)? = e.kind { s } else { nil } }
      let ended = events.compactMap { e -> Openshell_Events_V1_ExecEnded? in if case .execEnded(let s)? = e.kind { s } else { nil } }
      #expect(started.map(\.command) == [["sh", "-c", "echo ran", "[REDACTED]"], ["sh", "-c", "exit 3"]])
      #expect(ended.map(\.exitCode) == [0, 3])
      #expect(Set(ended.map(\.execID)) == Set(started.map(\.execID)))
      #expect(records.allSatisfy { $0.actor.hasPrefix("operator:CN=") })

      // The supervisor's fetch (or the push) of the environment is a disclosure to the sandbox.
      let disclosures = try log.records(from: 1, filter: EventFilter(types: ["audit.credentials_disclosed"])).map { try GatewayEvent.decode($0) }
      let toSandbox = disclosures.compactMap { e -> Openshell_Events_V1_CredentialsDisclosed? in
        if case .credentialsDisclosed(let d)? = e.kind, d.sandboxID == sandbox.metadata.id { d } else { nil }
      }
      #expect(!toSandbox.isEmpty)
      #expect(toSandbox.allSatisfy { $0.recipient == "sandbox:\(sandbox.metadata.id)" && $0.keys == ["ANTHROPIC_API_KEY"] && $0.providers == ["audited"] })

      try log.forEach(from: 1) { r in
        #expect(!String(decoding: r.payload, as: UTF8.self).contains(canary), "seq \(r.seq) \(r.type) holds the secret")
      }
      try await c.deleteAndWait("exec-audit")
    }
    await gw.stopEverything()
  }
}
