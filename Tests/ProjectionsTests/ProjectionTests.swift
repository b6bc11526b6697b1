import EventLog
import Foundation
import Projections
import Scenarios
import Testing

@Suite struct ProjectionTests {
  @Test func sameEventsGiveByteIdenticalSnapshots() throws {
    for scenario in Scenarios.all {
      let a = SnapshotCodec.encode(try FixtureWriter.project(scenario))
      let b = SnapshotCodec.encode(try FixtureWriter.project(scenario))
      #expect(a == b, "scenario \(scenario.name)")
      #expect(a.count > 100)
      // Round trip through the snapshot codec is lossless.
      let decoded = try SnapshotCodec.decode(a)
      #expect(SnapshotCodec.encode(decoded) == a)
    }
  }

  /// A sandbox's creator comes from `sandbox.requested`'s `created_by`; a record written before the field
  /// existed leaves it empty (so snapshots taken then still match a replay); the snapshot codec keeps it.
  @Test func sandboxCreatorComesFromTheRequestEvent() throws {
    var state = GatewayState()
    state.apply(
      GatewayEvent(
        .sandboxRequested(
          .with {
            $0.id = "s1"; $0.name = "a"; $0.workspace = "default"; $0.createdBy = "operator:CN=alice"
          })), seq: 1, timestampNs: 1)
    state.apply(
      GatewayEvent(
        .sandboxRequested(
          .with {
            $0.id = "s2"; $0.name = "b"; $0.workspace = "default"
          })), seq: 2, timestampNs: 2)
    #expect(state.sandboxes["s1"]?.createdBy == "operator:CN=alice")
    #expect(state.sandboxes["s2"]?.createdBy == "")
    for format in [SnapshotCodec.Format.binary, .json] {
      let decoded = try SnapshotCodec.decode(SnapshotCodec.encode(state, as: format))
      #expect(decoded.sandboxes["s1"]?.createdBy == "operator:CN=alice", "\(format)")
      #expect(decoded.sandboxes["s2"]?.createdBy == "", "\(format)")
    }
  }

  @Test func sandboxLifecycleProjection() throws {
    let state = try FixtureWriter.project(Scenarios.sandboxLifecycle())
    // The first happy-otter was deleted; a second one reused the name and is READY.
    let otters = state.sandboxes.values.filter { $0.name == "happy-otter" }
    #expect(otters.count == 1)
    #expect(otters.first?.phase == .ready)
    #expect(otters.first?.templateName == "python-dev")
    let broken = try #require(state.sandbox(named: "broken-lynx", workspace: "research"))
    #expect(broken.phase == .error)
    #expect(broken.conditions.first?.reason == "SupervisorExited")
    #expect(state.workspaces["research"]?.labels == ["team": "ml"])
    #expect(state.templates.isEmpty)
    #expect(state.gateway?.name == "openshell")
    #expect(state.activeCertificates.keys.sorted() == ["ca", "operator", "server"])
  }

  @Test func providerRotationProjection() throws {
    let state = try FixtureWriter.project(Scenarios.providerRotation())
    #expect(state.providers.count == 1, "github was deleted")
    let claude = try #require(state.providers.values.first)
    #expect(claude.name == "claude")
    #expect(claude.credentials.keys.sorted() == ["ANTHROPIC_API_KEY"])
    #expect(claude.rotations["ANTHROPIC_API_KEY"] != nil)
    let coder = try #require(state.sandbox(named: "coder", workspace: "default"))
    #expect(coder.providers == ["claude"])
    // No plaintext secret anywhere in the snapshot bytes.
    let snapshot = String(decoding: SnapshotCodec.encode(state), as: UTF8.self)
    #expect(!snapshot.contains("sk-ant-fixture"))
  }

  @Test func policyRevisionsProjection() throws {
    let state = try FixtureWriter.project(Scenarios.policyRevisions())
    let box = try #require(state.sandbox(named: "policy-box", workspace: "default"))
    let history = try #require(state.policies[box.id])
    #expect(history.revisions.map(\.version) == [1, 2, 3])
    #expect(history.revisions.map(\.status) == [.superseded, .failed, .loaded])
    #expect(history.activeVersion == 3)
    #expect(history.revision(2)?.message.contains("absolute") == true)
    #expect(state.globalPolicyActive == false)
    #expect(state.globalPolicy.revisions.count == 1)
    #expect(state.settings["global"] == nil)
    #expect(state.settings[box.id] == ["proxy_timeout": "30"])
  }

  @Test func inferenceProjection() throws {
    let state = try FixtureWriter.project(Scenarios.inferenceRoutes())
    #expect(state.inferenceRoutes.keys.sorted() == ["inference.local"])
    #expect(state.inferenceRoutes["inference.local"]?.model == "meta/llama-3.3-70b-instruct")
    #expect(state.inferenceBundleRevision == "rev-0004")
  }

  @Test func recordsAtOrBelowLastSeqAreIgnored() throws {
    let scenario = Scenarios.sandboxLifecycle()
    var state = try FixtureWriter.project(scenario)
    let before = SnapshotCodec.encode(state)
    // Re-applying an old record (an overlapping tail after a snapshot) changes nothing.
    let first = scenario.events[0]
    let record = EventRecord(
      seq: 1, timestampNs: first.timestampNs ?? 0, type: first.type, aggregate: first.aggregate, actor: first.actor,
      requestID: first.requestID, payloadVersion: first.payloadVersion, dictionaryID: 0, payload: first.payload,
      hash: [UInt8](repeating: 0, count: 32), previousHash: [UInt8](repeating: 0, count: 32), storedSize: 0)
    try state.apply(record)
    #expect(SnapshotCodec.encode(state) == before)
  }

  @Test func undecodablePayloadIsAnErrorNotACrash() throws {
    var state = GatewayState()
    let record = EventRecord(
      seq: 1, timestampNs: 1, type: "sandbox.requested", aggregate: .sandbox("x"), actor: "system", requestID: "",
      payloadVersion: 1, dictionaryID: 0, payload: [0xff, 0xff, 0xff, 0x01], hash: [], previousHash: [], storedSize: 0)
    #expect(throws: ProjectionError.self) { try state.apply(record) }
    let future = EventRecord(
      seq: 1, timestampNs: 1, type: "sandbox.requested", aggregate: .sandbox("x"), actor: "system", requestID: "",
      payloadVersion: 99, dictionaryID: 0, payload: [], hash: [], previousHash: [], storedSize: 0)
    #expect(throws: ProjectionError.self) { try state.apply(future) }
    #expect(state.lastSeq == 0)
  }

  @Test func requestIDsAreKeptForABoundedWindowOfTheNewest() throws {
    var state = GatewayState()
    let event = GatewayEvent(
      .workspaceCreated(
        .with {
          $0.id = "w"; $0.name = "w"
        })
    ).newEvent(actor: "system", requestID: "")
    let total = GatewayState.requestWindow + GatewayState.requestWindow / 10 + 1
    for seq in 1...UInt64(total) {
      try state.apply(
        EventRecord(
          seq: seq, timestampNs: seq, type: event.type, aggregate: event.aggregate, actor: "system", requestID: "r\(seq)",
          payloadVersion: event.payloadVersion, dictionaryID: 0, payload: event.payload, hash: [], previousHash: [], storedSize: 0))
    }
    // Pruned once it grew 10 % past the window: exactly the newest `requestWindow` ids remain.
    #expect(state.requests.count == GatewayState.requestWindow)
    #expect(state.requests["r\(total)"] == UInt64(total))
    #expect(state.requests["r\(total - GatewayState.requestWindow + 1)"] != nil)
    #expect(state.requests["r\(total - GatewayState.requestWindow)"] == nil)
    #expect(state.requests["r1"] == nil)
  }
}
