import EventLog
import Foundation
import GRPCCore
import Gateway
import LogTools
import OpenShellAPI
import Projections
import Testing

/// Audit records beyond mutations (issue 12): refused calls (aggregated), credential disclosures.
@Suite struct AuditTests {
  /// The audit records of a stopped gateway's log, decoded.
  static func auditEvents(_ dataDirectory: String, type: String) throws -> [(EventRecord, GatewayEvent)] {
    var o = EventLog.Options()
    o.readOnly = true
    let log = try EventLog.open(directory: dataDirectory + "/log", options: o)
    defer { log.close() }
    return try log.records(from: 1, filter: EventFilter(types: [type])).map { ($0, try GatewayEvent.decode($0)) }
  }

  /// 1,000 refused calls of each of three kinds (a sandbox calling an operator RPC, a sandbox calling another
  /// sandbox's RPC, the operator calling a supervisor RPC) become exactly one event each, with the right count,
  /// identity, RPC and reason.
  @Test func aRefusalFloodIsOneEventPerKindWithItsCount() async throws {
    let gw = try await TestGateway.start { $0.refusalWindow = .seconds(600) }  // flushed at shutdown
    let (cert, key) = try gw.sandboxCertificate("sb-flood")
    try await gw.withClient(certificate: cert, key: key) { api in
      for _ in 0..<1000 {
        let e = await rpcError { _ = try await api.listSandboxes(.init()) }
        #expect(e?.code == .permissionDenied)
      }
      // A sandbox calling another sandbox's RPC.
      for _ in 0..<1000 {
        let e = await rpcError { _ = try await api.getSandboxProviderEnvironment(.with { $0.sandboxID = "sb-other" }) }
        #expect(e?.code == .permissionDenied)
      }
    }
    try await gw.withClient { api in
      for _ in 0..<1000 {
        let e = await rpcError { _ = try await api.getSandboxProviderEnvironment(.with { $0.sandboxID = "sb-flood" }) }
        #expect(e?.code == .permissionDenied)
      }
      _ = try await api.health(.init())  // an allowed call is never recorded as refused
    }
    await gw.stop()
    let events = try Self.auditEvents(gw.dataDirectory, type: "audit.access_refused")
    let refusals = events.compactMap { r, e -> Openshell_Events_V1_AccessRefused? in
      if case .accessRefused(let a)? = e.kind { return a } else { return nil }
    }
    #expect(refusals.count == 3, "one event per (identity, RPC, code, reason): \(refusals.map { "\($0.identity) \($0.rpc) \($0.count)" })")
    let bySandbox = try #require(refusals.first { $0.identity == "sandbox:sb-flood" && $0.rpc.hasSuffix("/ListSandboxes") })
    #expect(bySandbox.count == 1000)
    #expect(bySandbox.rpc == "openshell.v1.OpenShell/ListSandboxes")
    #expect(bySandbox.code == "PERMISSION_DENIED")
    #expect(bySandbox.reason.contains("not available to sandbox identities"))
    #expect(bySandbox.peer.contains("127.0.0.1"))
    #expect(bySandbox.lastNs >= bySandbox.firstNs)
    let crossSandbox = try #require(refusals.first { $0.identity == "sandbox:sb-flood" && $0.rpc.hasSuffix("/GetSandboxProviderEnvironment") })
    #expect(crossSandbox.count == 1000)
    #expect(crossSandbox.reason.contains("for sandbox sb-other"), "\(crossSandbox.reason)")
    let byOperator = try #require(refusals.first { $0.identity.hasPrefix("operator:") })
    #expect(byOperator.count == 1000)
    #expect(byOperator.rpc == "openshell.v1.OpenShell/GetSandboxProviderEnvironment")
    // The record's actor is the refused identity.
    #expect(events.map(\.0.actor).contains("sandbox:sb-flood"))
  }

  /// A window closes on its own: its event is written while the gateway runs (not only at shutdown), and a
  /// later refusal of the same kind opens a new window. (How many windows the first calls span depends on the
  /// machine's speed; the flood test above pins the one-event-per-window rule.)
  @Test func aClosedWindowIsWrittenAndANewOneOpens() async throws {
    let gw = try await TestGateway.start { $0.refusalWindow = .seconds(1) }
    let (cert, key) = try gw.sandboxCertificate("sb-window")
    func counts(_ log: EventLog) throws -> [UInt64] {
      try log.records(from: 1, filter: EventFilter(types: ["audit.access_refused"])).compactMap { r -> UInt64? in
        if case .accessRefused(let a)? = try GatewayEvent.decode(r).kind { return a.count } else { return nil }
      }
    }
    try await gw.withClient(certificate: cert, key: key) { api in
      for _ in 0..<3 { _ = await rpcError { _ = try await api.listProviders(.init()) } }
      // Written while running: poll (up to 20 s) until the three refusals are on record.
      var written: [UInt64] = []
      for _ in 0..<200 {
        written = try counts(gw.running.store.log)
        if written.reduce(0, +) == 3 { break }
        try await Task.sleep(for: .milliseconds(100))
      }
      #expect(written.reduce(0, +) == 3, "the closed windows' events are written while the gateway runs: \(written)")
      _ = await rpcError { _ = try await api.listProviders(.init()) }
    }
    let before = try counts(gw.running.store.log).count
    await gw.stop()
    let all = try Self.auditEvents(gw.dataDirectory, type: "audit.access_refused").compactMap { _, e -> UInt64? in
      if case .accessRefused(let a)? = e.kind { return a.count } else { return nil }
    }
    #expect(all.reduce(0, +) == 4)
    #expect(all.count == before + 1 && all.last == 1, "the later refusal opened a new window: \(all)")
  }

  /// Every credential read is on record with recipient, provider and key names — never a value.
  @Test func credentialReadsAreRecordedWithoutValues() async throws {
    let canary = "canary-\(UUID().uuidString)"
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      _ = try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "gl"; $0.type = "gitlab"; $0.credentials = ["GITLAB_TOKEN": canary]
          }
        })
      let got = try await api.getProviderCredentials(
        .with {
          $0.name = "gl"; $0.credentialKeys = ["GITLAB_TOKEN"]
        })
      #expect(got.credentials["GITLAB_TOKEN"]?.value == canary)
    }
    await gw.stop()
    let events = try Self.auditEvents(gw.dataDirectory, type: "audit.credentials_disclosed")
    #expect(events.count == 1)
    let (record, event) = try #require(events.first)
    guard case .credentialsDisclosed(let d)? = event.kind else { Issue.record("wrong kind"); return }
    #expect(d.rpc == "GetProviderCredentials")
    #expect(d.providers == ["gl"])
    #expect(d.keys == ["GITLAB_TOKEN"])
    #expect(d.recipient.hasPrefix("operator:CN="))
    #expect(record.actor == d.recipient)
    // Canary: no value in any record's payload, nor in any output format of the audit.
    var o = EventLog.Options()
    o.readOnly = true
    let log = try EventLog.open(directory: gw.dataDirectory + "/log", options: o)
    defer { log.close() }
    try log.forEach(from: 1) { r in
      #expect(!String(decoding: r.payload, as: UTF8.self).contains(canary), "seq \(r.seq) \(r.type) holds the secret")
    }
    let entries = try Audit.timeline(log, query: AuditQuery())
    #expect(entries.contains { $0.type == "audit.credentials_disclosed" })
    // "Who read this provider's secrets": the provider filter finds the disclosure (it names the provider).
    var byProvider = AuditQuery()
    byProvider.provider = "gl"
    #expect(try Audit.timeline(log, query: byProvider).map(\.type) == ["provider.created", "audit.credentials_disclosed"])
    let outputs = [Audit.table(entries), String(decoding: try JSONEncoder().encode(entries), as: UTF8.self)]
    for text in outputs {
      #expect(!text.contains(canary), "an audit output holds the secret")
      #expect(text.contains("GITLAB_TOKEN"))
    }
  }
}
