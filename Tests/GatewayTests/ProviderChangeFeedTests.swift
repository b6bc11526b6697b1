import EventLog
import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import Testing

@testable import Gateway

/// Provider deliveries and inference republication follow the log from checkpoints (issue 16), so a change
/// appended just before a crash is handled when the gateway starts again.
@Suite(.serialized) struct ProviderChangeFeedTests {
  @Test func aChangeAppendedBeforeACrashIsHandledAtTheNextStart() async throws {
    let gw = try await TestGateway.start()
    let dir = gw.dataDirectory
    try await gw.withClient { api in
      _ = try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "feed"; $0.type = "claude"; $0.credentials = ["ANTHROPIC_API_KEY": "k-feed"]
          }
        })
      _ = try await api.createSandbox(.with { $0.name = "feed-user" })
      // The consumers keep up with the log while it runs.
      let attached = try await api.attachSandboxProvider(
        .with {
          $0.sandbox = "feed-user"; $0.provider = "feed"
        })
      #expect(attached.attached)
    }
    let log = gw.running.store.log
    let head = log.headSeq
    try await waitFor { (try? log.checkpoint(ProviderDelivery.checkpointName)) ?? nil ?? 0 >= head }
    try await waitFor { (try? log.checkpoint(InferenceService.checkpointName)) ?? nil ?? 0 >= head }
    await gw.stop()

    // A detachment lands in the log, and the gateway dies before anything acts on it.
    let offline = try EventLog.open(directory: dir + "/log", options: .init())
    let store = try GatewayStore(log: offline)
    let sandboxID = try #require(await store.state.sandbox(named: "feed-user", workspace: "default")?.id)
    try await store.record([
      GatewayEvent(
        .sandboxProviderDetached(
          .with {
            $0.sandboxID = sandboxID; $0.provider = "feed"
          }))
    ])
    let detachSeq = offline.headSeq
    #expect(try offline.checkpoint(ProviderDelivery.checkpointName) ?? 0 < detachSeq)
    offline.close()

    // The next start resumes each consumer from its checkpoint and handles the change.
    let again = try await TestGateway.start(dataDirectory: dir)
    let log2 = again.running.store.log
    try await waitFor { (try? log2.checkpoint(ProviderDelivery.checkpointName)) ?? nil ?? 0 >= detachSeq }
    try await waitFor { (try? log2.checkpoint(InferenceService.checkpointName)) ?? nil ?? 0 >= detachSeq }
    await again.stop()
  }

  /// Issue 14: a restart resumes each feed at the head when nothing is pending, instead of re-reading the log
  /// from a checkpoint that only provider changes move — but a change still pending is never skipped, even when
  /// a snapshot taken after it (and a long tail of other records) is what the restart loads.
  @Test func aPendingChangeBehindASnapshotIsHandledAndIdleFeedsResumeAtTheHead() async throws {
    let gw = try await TestGateway.start()
    let dir = gw.dataDirectory
    try await gw.withClient { api in
      _ = try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "snap"; $0.type = "claude"; $0.credentials = ["ANTHROPIC_API_KEY": "k-snap"]
          }
        })
      _ = try await api.createSandbox(.with { $0.name = "snap-user" })
      _ = try await api.attachSandboxProvider(
        .with {
          $0.sandbox = "snap-user"; $0.provider = "snap"
        })
    }
    let log = gw.running.store.log
    let head = log.headSeq
    try await waitFor { (try? log.checkpoint(ProviderDelivery.checkpointName)) ?? nil ?? 0 >= head }
    await gw.stop()

    // Offline: a detachment nobody handles, then 300 records that are no provider change, then a snapshot at
    // the head (so the restart replays nothing and learns of the change from the snapshot alone).
    let offline = try EventLog.open(directory: dir + "/log", options: .init())
    let store = try GatewayStore(log: offline)
    let sandboxID = try #require(await store.state.sandbox(named: "snap-user", workspace: "default")?.id)
    try await store.record([
      GatewayEvent(
        .sandboxProviderDetached(
          .with {
            $0.sandboxID = sandboxID; $0.provider = "snap"
          }))
    ])
    let detachSeq = offline.headSeq
    for i in 0..<300 {
      try await store.record([
        GatewayEvent(
          .gatewayConfigured(
            .with {
              $0.port = UInt32(20_000 + i); $0.authMode = "mtls"
            }))
      ])
    }
    await store.snapshot()
    #expect(await store.state.providerChangeSeq == detachSeq)
    let saved = try #require(try offline.checkpoint(ProviderDelivery.checkpointName))
    #expect(saved < detachSeq)
    #expect(try offline.snapshotSeqs(name: SnapshotCodec.projectionName).first == offline.headSeq)
    let tail = offline.headSeq
    offline.close()

    // The pending change is handled: each checkpoint reaches exactly the detachment (nothing after it is a
    // provider change), which it is saved at only after its handler ran.
    let again = try await TestGateway.start(dataDirectory: dir)
    #expect(again.running.store.loadedSnapshotSeq == tail)
    let log2 = again.running.store.log
    try await waitFor { (try? log2.checkpoint(ProviderDelivery.checkpointName)) ?? nil == detachSeq }
    try await waitFor { (try? log2.checkpoint(InferenceService.checkpointName)) ?? nil == detachSeq }
    await again.stop()

    // Nothing pending now: the next start moves both checkpoints to the head it loaded, without a rescan.
    let third = try await TestGateway.start(dataDirectory: dir)
    let log3 = third.running.store.log
    let loaded = await third.running.store.state.lastSeq
    #expect(loaded > tail)
    try await waitFor { (try? log3.checkpoint(ProviderDelivery.checkpointName)) ?? nil ?? 0 >= loaded }
    try await waitFor { (try? log3.checkpoint(InferenceService.checkpointName)) ?? nil ?? 0 >= loaded }
    await third.stop()
  }

  @Test func resumePointSkipsOnlyWhenNothingIsPending() {
    var state = GatewayState()
    state.lastSeq = 1_000
    state.providerChangeSeq = 400
    #expect(ProviderChangeFeed.resumePoint(saved: nil, state: state) == (1_001, 1_000))  // first start: the head
    #expect(ProviderChangeFeed.resumePoint(saved: 400, state: state) == (1_001, 1_000))  // handled: skip to the head
    #expect(ProviderChangeFeed.resumePoint(saved: 399, state: state) == (400, nil))  // pending: from after the checkpoint
    #expect(ProviderChangeFeed.resumePoint(saved: 1_000, state: state) == (1_001, nil))
    #expect(ProviderChangeFeed.resumePoint(saved: 1_200, state: state) == (1_201, nil))  // never moves a checkpoint back
  }

  @Test func providerChangeSeqFollowsEveryProviderChangeType() throws {
    var state = GatewayState()
    let kinds: [GatewayEvent.OneOf_Kind] = [
      .providerCreated(
        .with {
          $0.id = "p"; $0.name = "n"; $0.workspace = "default"; $0.type = "github"
        }),
      .providerUpdated(.with { $0.id = "p" }), .providerCredentialRotated(.with { $0.id = "p" }),
      .sandboxProviderAttached(
        .with {
          $0.sandboxID = "s"; $0.provider = "n"
        }),
      .sandboxProviderDetached(
        .with {
          $0.sandboxID = "s"; $0.provider = "n"
        }), .providerDeleted(.with { $0.id = "p" }),
    ]
    var types: Set<String> = []
    for (i, kind) in kinds.enumerated() {
      let n = GatewayEvent(kind).newEvent(actor: "system", requestID: "")
      types.insert(n.type)
      state.apply(GatewayEvent(kind), seq: UInt64(2 * i + 1), timestampNs: 1)
      #expect(state.providerChangeSeq == UInt64(2 * i + 1), "\(n.type)")
      state.apply(GatewayEvent(.gatewayConfigured(.with { $0.port = 1 })), seq: UInt64(2 * i + 2), timestampNs: 1)
      #expect(state.providerChangeSeq == UInt64(2 * i + 1), "a gateway record is no provider change")
    }
    #expect(types == ProviderChangeFeed.types)
  }

  @Test func recordsMapToChangesNamingTheSandboxesAffected() async throws {
    var state = GatewayState()
    let events: [GatewayEvent] = [
      GatewayEvent(
        .providerCreated(
          .with {
            $0.id = "p1"; $0.name = "gh"; $0.workspace = "default"; $0.type = "github"; $0.dataKeyID = "dk-1"
          })),
      GatewayEvent(
        .sandboxRequested(
          .with {
            $0.id = "s1"; $0.name = "a"; $0.workspace = "default"; $0.providers = ["gh"]
          })),
      GatewayEvent(
        .sandboxRequested(
          .with {
            $0.id = "s2"; $0.name = "b"; $0.workspace = "default"
          })),
      GatewayEvent(.providerCredentialRotated(.with { $0.id = "p1" })),
      GatewayEvent(
        .sandboxProviderAttached(
          .with {
            $0.sandboxID = "s2"; $0.provider = "gh"
          })),
      GatewayEvent(
        .policyRevisionLoaded(
          .with {
            $0.sandboxID = "s1"; $0.version = 1
          })),
    ]
    var changes: [ProviderChange?] = []
    for (i, e) in events.enumerated() {
      let n = e.newEvent(actor: "system", requestID: "")
      let record = EventRecord(
        seq: UInt64(i + 1), timestampNs: 1, type: n.type, aggregate: n.aggregate, actor: n.actor, requestID: "",
        payloadVersion: n.payloadVersion, dictionaryID: 0, payload: n.payload, hash: [], previousHash: [], storedSize: 0)
      try state.apply(record)
      changes.append(ProviderChangeFeed.change(record, state: state))
    }
    #expect(changes[0]?.kind == .created && changes[0]?.sandboxIDs == [])
    #expect(changes[1] == nil && changes[2] == nil && changes[5] == nil)
    #expect(changes[3]?.kind == .rotated && changes[3]?.sandboxIDs == ["s1"] && changes[3]?.provider == "gh")
    #expect(changes[4]?.kind == .attached && changes[4]?.sandboxIDs == ["s2"] && changes[4]?.providerID == "p1")
  }

  private func waitFor(_ condition: () -> Bool) async throws {
    for _ in 0..<100 {
      if condition() { return }
      try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("condition not met within 5 s")
  }
}
