import EventLog
import Foundation
import OpenShellAPI
import Projections
import SwiftProtobuf
import Testing

@testable import Gateway

/// The audit watch's hand-written wire encoding (``AuditWireBatch``, issue 12) against swift-protobuf's
/// encoding of the same `WatchEventsResponse`, and the watch's size cut (``AuditWatch/Cutter``).
@Suite struct AuditWireTests {
  /// Fields that exercise every branch of the encoder: omitted defaults (seq, timestamp, actor, request id,
  /// summary), lengths of one, two and three varint bytes, multi-byte UTF-8, empty and non-empty OCSF
  /// elements, a seq that needs ten varint bytes.
  static let fixture: [Openshell_Audit_V1_AuditEvent] = {
    let long = String(repeating: "ü-ø ", count: 40)  // 240 bytes: a two-byte length
    let huge = String(repeating: "x", count: 20_000)  // a three-byte length
    return [
      .with {
        $0.seq = 1; $0.timestampNs = 1_700_000_000_000_000_000; $0.type = "audit.access_refused"; $0.aggregate = "audit/refusals"
        $0.actor = "sandbox:sb-1"; $0.requestID = "r1"; $0.summary = "refused 3× openshell.v1.OpenShell/ListSandboxes"
      },
      .with {
        $0.seq = 2; $0.type = "exec.started"; $0.aggregate = "sandbox/0b8e"; $0.summary = long
      },
      .with {
        $0.seq = 127; $0.timestampNs = 1; $0.type = "t"; $0.aggregate = "k/"; $0.actor = "operator:CN=ünïcode"
        $0.ocsf = ["", "{\"class_uid\":6003}", huge]
      },
      .with {
        $0.seq = UInt64.max; $0.timestampNs = UInt64.max; $0.type = "exec.ended"; $0.aggregate = "/id"; $0.requestID = "req-\u{1F600}"
        $0.summary = huge
      },
      .with {
        $0.type = "x"; $0.aggregate = "a/b"  // seq 0 and no timestamp: both omitted
      },
    ]
  }()

  static func aggregate(_ s: String) -> AggregateRef {
    let parts = s.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
    return AggregateRef(kind: String(parts[0]), id: String(parts[1]))
  }

  static func encode(_ events: [Openshell_Audit_V1_AuditEvent]) -> AuditWireBatch {
    var batch = AuditWireBatch()
    for e in events {
      let a = aggregate(e.aggregate)
      let size = AuditWireBatch.eventSize(
        seq: e.seq, timestampNs: e.timestampNs, type: e.type, aggregate: a, actor: e.actor, requestID: e.requestID, summary: e.summary, ocsf: e.ocsf)
      batch.append(
        seq: e.seq, timestampNs: e.timestampNs, type: e.type, aggregate: a, actor: e.actor, requestID: e.requestID, summary: e.summary,
        ocsf: e.ocsf, size: size)
    }
    return batch
  }

  /// The batch's bytes are byte for byte swift-protobuf's serialization of the same message, decode back to
  /// the same values, and each event's slice is that event's own serialization (WatchEvents' messages).
  @Test func wireBytesAreSwiftProtobufsEncoding() throws {
    let batch = Self.encode(Self.fixture)
    let expected: [UInt8] = try Openshell_Audit_V1_WatchEventsResponse.with { $0.events = Self.fixture }.serializedBytes()
    #expect(batch.bytes.count == expected.count)
    #expect(batch.bytes == expected)
    let decoded = try batch.message().events
    #expect(decoded == Self.fixture)
    #expect(batch.count == Self.fixture.count && batch.lastSeq == 0)
    for (i, e) in Self.fixture.enumerated() {
      let own: [UInt8] = try e.serializedBytes()
      #expect(Array(batch.bytes[batch.ranges[i]]) == own, "event \(i)")
      #expect(batch.size(appending: own.count) > batch.bytes.count)
    }
    // Each prefix too (the batch is valid after every append).
    for n in 1...Self.fixture.count {
      let prefix = Array(Self.fixture.prefix(n))
      let reference: [UInt8] = try Openshell_Audit_V1_WatchEventsResponse.with { $0.events = prefix }.serializedBytes()
      #expect(Self.encode(prefix).bytes == reference)
    }
    let empty = try AuditWireBatch().message()
    #expect(AuditWireBatch().bytes.isEmpty && empty.events.isEmpty)
  }

  static func record(_ seq: UInt64, _ event: GatewayEvent) -> EventRecord {
    let n = event.newEvent(actor: "system", requestID: "r\(seq)", timestampNs: 1_000 + seq)
    return EventRecord(
      seq: seq, timestampNs: 1_000 + seq, type: n.type, aggregate: n.aggregate, actor: n.actor, requestID: n.requestID,
      payloadVersion: n.payloadVersion, dictionaryID: 0, payload: n.payload, hash: [], previousHash: [], storedSize: 0)
  }

  /// The watch's cut: every event once and in order across batches, no empty batch, every batch of more
  /// than one event within the limit, an event larger than the limit alone in its batch, and the summary
  /// is EventSummary's line.
  @Test func cutterKeepsEveryEventInOrderUnderTheSizeBound() throws {
    let big = String(repeating: "y", count: 5_000)
    var cutter = AuditWatch.Cutter(ocsf: false, limit: 4_096)
    var batches: [AuditWireBatch] = []
    var records: [EventRecord] = []
    for i in 1...60 {
      let event = GatewayEvent(
        .execStarted(
          .with {
            $0.sandboxID = "sb"; $0.execID = "e\(i)"; $0.command = ["echo", i % 17 == 0 ? big : "n\(i)"]
          }))
      let r = Self.record(UInt64(i), event)
      records.append(r)
      if let full = cutter.add(r, event) { batches.append(full) }
    }
    if !cutter.batch.isEmpty { batches.append(cutter.take()) }
    #expect(cutter.batch.isEmpty)
    let decoded = try batches.map { try $0.message().events }
    #expect(decoded.flatMap { $0.map(\.seq) } == Array(1...60))
    #expect(!batches.contains { $0.isEmpty })
    #expect(batches.count > 3)
    for b in batches where b.count > 1 { #expect(b.bytes.count <= 4_096, "\(b.count) events in \(b.bytes.count) bytes") }
    #expect(batches.contains { $0.count == 1 && $0.bytes.count > 4_096 }, "the oversized event travels alone")
    let first = try #require(decoded.first?.first)
    #expect(first.summary == "exec e1: echo n1" && first.actor == "system" && first.requestID == "r1" && first.timestampNs == 1_001)
    #expect(first.type == records[0].type && first.aggregate == "\(records[0].aggregate.kind)/\(records[0].aggregate.id)")
  }
}
