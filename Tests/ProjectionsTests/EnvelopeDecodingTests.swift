import EventLog
import Foundation
import Scenarios
import Testing

@testable import Projections

/// The envelope split of ``EventEnvelope`` (issue 14: replay): the same events as
/// swift-protobuf's `GatewayEvent(serializedBytes:)`, and nil (the general decoder's turn) for any other shape.
@Suite struct EnvelopeDecodingTests {
  /// The split event; also checks that the kind-only split agrees with it.
  static func split(_ bytes: [UInt8]) -> GatewayEvent? {
    bytes.withUnsafeBytes { p in
      let event = EventEnvelope(p)?.event
      #expect(EventEnvelope.kind(of: p) == event?.kind)
      return event
    }
  }

  @Test("every scenario event decodes through the split, equal to swift-protobuf's decode")
  func scenarioEvents() throws {
    var kinds = Set<String>()
    for scenario in Scenarios.all {
      for e in scenario.events {
        let general = try GatewayEvent(serializedBytes: e.payload)
        let fast = try #require(Self.split(e.payload), "\(e.type) did not take the split")
        #expect(fast == general, "\(e.type)")
        #expect(fast.typeName == e.type)
        kinds.insert(e.type)
      }
    }
    #expect(kinds.count >= 20)
  }

  @Test("request_rpc and request_target after the kind are decoded too")
  func requestFields() throws {
    var event = GatewayEvent(
      .sandboxReady(
        .with {
          $0.id = "sbx-1"; $0.hostKeyFingerprint = "SHA256:abc"
        }))
    event.requestRpc = "CreateSandbox"
    event.requestTarget = "default/happy-otter"
    let bytes: [UInt8] = try event.serializedBytes()
    let fast = try #require(Self.split(bytes))
    #expect(fast == event)
    #expect(fast.requestRpc == "CreateSandbox" && fast.requestTarget == "default/happy-otter")
    event.requestTarget = ""
    #expect(Self.split(try event.serializedBytes()) == event)
  }

  @Test("other shapes are left to the general decoder, which still rejects bad payloads")
  func otherShapes() throws {
    let ready: [UInt8] = try GatewayEvent(.sandboxReady(.with { $0.id = "sbx-1" })).serializedBytes()
    let rpcOnly: [UInt8] = [0xC2, 0x3E, 0x01, 0x41]  // field 1000 "A" alone: no kind first
    #expect(Self.split([]) == nil)
    #expect(Self.split(rpcOnly) == nil)
    #expect(Self.split(rpcOnly + ready) == nil)  // request_rpc before the kind
    #expect(Self.split(ready + ready) == nil)  // the kind twice (swift-protobuf merges)
    #expect(Self.split(ready + rpcOnly + rpcOnly) == nil)  // request_rpc twice
    #expect(Self.split(ready + [0xC2, 0x3E, 0x01, 0xFF]) == nil)  // invalid UTF-8 in request_rpc
    #expect(Self.split([0xBA, 0x3E, 0x00]) == nil)  // field 999: not a kind this build knows
    #expect(Self.split([0xB0, 0x01, 0x01]) == nil)  // field 22 as a varint
    #expect(Self.split(Array(ready.dropLast())) == nil)  // truncated
    #expect(Self.split([0xB2, 0x01, 0x02, 0xFF, 0xFF]) == nil)  // a kind whose bytes do not decode
    // Through `decode(_:)`: the general decoder still names the record.
    let record = EventRecord(
      seq: 7, timestampNs: 1, type: "sandbox.ready", aggregate: .sandbox("sbx-1"), actor: "system", requestID: "",
      payloadVersion: 1, dictionaryID: 0, payload: Array(ready.dropLast()), hash: [], previousHash: [], storedSize: 0)
    #expect(throws: ProjectionError.self) { try GatewayEvent.decode(record) }
    let unknown = EventRecord(
      seq: 8, timestampNs: 1, type: "sandbox.ready", aggregate: .sandbox("sbx-1"), actor: "system", requestID: "",
      payloadVersion: 1, dictionaryID: 0, payload: [0xBA, 0x3E, 0x00], hash: [], previousHash: [], storedSize: 0)
    #expect(throws: ProjectionError.self) { try GatewayEvent.decode(unknown) }
  }
}
