import EventLog
import GRPCCore
import OpenShellAPI
import SwiftProtobuf

/// Consecutive audit events already in protobuf wire form: the bytes of one `WatchEventsResponse`
/// (Protos/audit.proto: `repeated AuditEvent events = 1`), written straight from a record's fields and its
/// summary into one buffer, without an `AuditEvent` value per event (issue 12, WatchEvents catch-up rate).
///
/// The bytes are exactly what swift-protobuf writes for the same message: fields in number order, proto3
/// defaults (0, "") omitted, every `ocsf` element written even when empty (AuditWireTests compares the two on
/// a fixture). Field numbers 1…8 all fit a one-byte tag.
public struct AuditWireBatch: Sendable, Hashable {
  /// The encoded `WatchEventsResponse`.
  public private(set) var bytes: [UInt8] = []
  /// Byte offset of each event's `AuditEvent` message in ``bytes`` (after its tag and length prefix).
  public private(set) var ranges: [Range<Int>] = []
  /// Seq of the last event appended (0 when empty).
  public private(set) var lastSeq: UInt64 = 0

  /// An empty batch.
  public init() {}

  /// Events in the batch.
  public var count: Int { ranges.count }
  /// True when no event was appended yet.
  public var isEmpty: Bool { ranges.isEmpty }

  /// Encoded size in bytes of the `AuditEvent` of these fields (without its tag and length prefix in the
  /// batch); `aggregate` is written as `kind/id`.
  public static func eventSize(
    seq: UInt64, timestampNs: UInt64, type: String, aggregate: AggregateRef, actor: String, requestID: String,
    summary: String, ocsf: [String]
  ) -> Int {
    eventSize(
      seq: seq, timestampNs: timestampNs, type: type, aggregate: aggregate, actor: actor, requestID: requestID,
      summaryCount: summary.utf8.count, ocsf: ocsf)
  }

  /// ``eventSize(seq:timestampNs:type:aggregate:actor:requestID:summary:ocsf:)`` for a summary of
  /// `summaryCount` UTF-8 bytes.
  public static func eventSize(
    seq: UInt64, timestampNs: UInt64, type: String, aggregate: AggregateRef, actor: String, requestID: String,
    summaryCount: Int, ocsf: [String]
  ) -> Int {
    var n = eventSize(
      seq: seq, timestampNs: timestampNs, typeCount: type.utf8.count,
      aggregateCount: aggregate.kind.utf8.count + 1 + aggregate.id.utf8.count, actorCount: actor.utf8.count,
      requestIDCount: requestID.utf8.count, summaryCount: summaryCount)
    for s in ocsf {
      let c = s.utf8.count
      n += 1 + varintSize(UInt64(c)) + c
    }
    return n
  }

  /// Encoded size in bytes of an `AuditEvent` without OCSF events whose string fields have these UTF-8
  /// lengths (`aggregateCount`: of `kind/id`).
  public static func eventSize(
    seq: UInt64, timestampNs: UInt64, typeCount: Int, aggregateCount: Int, actorCount: Int, requestIDCount: Int,
    summaryCount: Int
  ) -> Int {
    var n = 0
    if seq != 0 { n += 1 + varintSize(seq) }
    if timestampNs != 0 { n += 1 + varintSize(timestampNs) }
    n += stringFieldSize(typeCount) + stringFieldSize(aggregateCount)
    n += stringFieldSize(actorCount) + stringFieldSize(requestIDCount) + stringFieldSize(summaryCount)
    return n
  }

  /// Size the batch has after appending an event of `eventSize` bytes (``eventSize(seq:timestampNs:type:aggregate:actor:requestID:summary:ocsf:)``).
  public func size(appending eventSize: Int) -> Int { bytes.count + 1 + Self.varintSize(UInt64(eventSize)) + eventSize }

  /// Appends one event (field 1 of `WatchEventsResponse`). `size` must be the value of ``eventSize(seq:timestampNs:type:aggregate:actor:requestID:summary:ocsf:)``
  /// for the same fields (callers usually need it anyway, to cut batches).
  public mutating func append(
    seq: UInt64, timestampNs: UInt64, type: String, aggregate: AggregateRef, actor: String, requestID: String,
    summary: String, ocsf: [String], size: Int
  ) {
    var summary = summary
    summary.withUTF8 {
      append(
        seq: seq, timestampNs: timestampNs, type: type, aggregate: aggregate, actor: actor, requestID: requestID,
        summary: UnsafeRawBufferPointer($0), ocsf: ocsf, size: size)
    }
  }

  /// ``append(seq:timestampNs:type:aggregate:actor:requestID:summary:ocsf:size:)`` with the summary given as
  /// its UTF-8 bytes (valid UTF-8; `size` from ``eventSize(seq:timestampNs:type:aggregate:actor:requestID:summaryCount:ocsf:)``).
  public mutating func append(
    seq: UInt64, timestampNs: UInt64, type: String, aggregate: AggregateRef, actor: String, requestID: String,
    summary: UnsafeRawBufferPointer, ocsf: [String], size: Int
  ) {
    var id = aggregate.id
    var requestID = requestID
    id.withUTF8 { i in
      requestID.withUTF8 { q in
        append(
          seq: seq, timestampNs: timestampNs, type: type, kind: aggregate.kind, id: UnsafeRawBufferPointer(i), actor: actor,
          requestID: UnsafeRawBufferPointer(q), summary: summary, ocsf: ocsf, size: size)
      }
    }
  }

  /// ``append(seq:timestampNs:type:aggregate:actor:requestID:summary:ocsf:size:)`` with the aggregate id and
  /// the request id given as their UTF-8 bytes (a borrowed record's), `size` from
  /// ``eventSize(seq:timestampNs:typeCount:aggregateCount:actorCount:requestIDCount:summaryCount:)`` when
  /// `ocsf` is empty.
  public mutating func append(
    seq: UInt64, timestampNs: UInt64, type: String, kind: String, id: UnsafeRawBufferPointer, actor: String,
    requestID: UnsafeRawBufferPointer, summary: UnsafeRawBufferPointer, ocsf: [String], size: Int
  ) {
    bytes.append(0x0A)
    appendVarint(UInt64(size))
    let start = bytes.count
    if seq != 0 {
      bytes.append(0x08)
      appendVarint(seq)
    }
    if timestampNs != 0 {
      bytes.append(0x10)
      appendVarint(timestampNs)
    }
    appendString(0x1A, type)
    bytes.append(0x22)
    appendVarint(UInt64(kind.utf8.count + 1 + id.count))
    appendUTF8(kind)
    bytes.append(UInt8(ascii: "/"))
    bytes.append(contentsOf: id)
    appendString(0x2A, actor)
    appendBytes(0x32, requestID)
    appendBytes(0x3A, summary)
    for s in ocsf {
      bytes.append(0x42)
      appendVarint(UInt64(s.utf8.count))
      appendUTF8(s)
    }
    assert(bytes.count - start == size, "AuditWireBatch.append: size \(size) does not match the fields")
    ranges.append(start..<bytes.count)
    lastSeq = seq
  }

  /// The batch as the generated message (for callers that need values, e.g. the one-event-per-message
  /// method's generated handler); decodes ``bytes``.
  /// - Throws: `SwiftProtobuf.BinaryDecodingError` (never for bytes this type wrote).
  public func message() throws -> Openshell_Audit_V1_WatchEventsResponse {
    try Openshell_Audit_V1_WatchEventsResponse(serializedBytes: bytes)
  }

  // MARK: encoding helpers

  static func varintSize(_ v: UInt64) -> Int { v < 0x80 ? 1 : (64 - v.leadingZeroBitCount + 6) / 7 }

  /// A proto3 string field of `count` UTF-8 bytes: omitted when empty.
  static func stringFieldSize(_ count: Int) -> Int { count == 0 ? 0 : 1 + varintSize(UInt64(count)) + count }

  private mutating func appendVarint(_ value: UInt64) {
    var v = value
    while v >= 0x80 {
      bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
      v >>= 7
    }
    bytes.append(UInt8(v))
  }

  private mutating func appendString(_ tag: UInt8, _ s: String) {
    guard !s.isEmpty else { return }
    bytes.append(tag)
    appendVarint(UInt64(s.utf8.count))
    appendUTF8(s)
  }

  /// A proto3 string field given as its UTF-8 bytes: omitted when empty.
  private mutating func appendBytes(_ tag: UInt8, _ b: UnsafeRawBufferPointer) {
    guard !b.isEmpty else { return }
    bytes.append(tag)
    appendVarint(UInt64(b.count))
    bytes.append(contentsOf: b)
  }

  /// The string's UTF-8 bytes in one copy (a native string's storage as it is).
  private mutating func appendUTF8(_ s: String) {
    var s = s
    s.withUTF8 { bytes.append(contentsOf: $0) }
  }

  /// Reserves room for `n` bytes in all (a watch sizes each batch like the one before it).
  public mutating func reserveCapacity(_ n: Int) { bytes.reserveCapacity(n) }
}

/// Writes a ``AuditWireBatch`` as one `WatchEventsResponse` message: its bytes as they are.
struct AuditWireBatchSerializer: MessageSerializer {
  func serialize<Bytes: GRPCContiguousBytes>(_ message: AuditWireBatch) throws -> Bytes {
    Bytes(message.bytes)
  }
}

/// One event of a ``AuditWireBatch`` as one `AuditEvent` message (WatchEvents, one event per message).
struct AuditWireEvent: Sendable {
  let batch: AuditWireBatch
  let index: Int
}

/// Writes a ``AuditWireEvent`` as its `AuditEvent` message: the event's slice of the batch's bytes.
struct AuditWireEventSerializer: MessageSerializer {
  func serialize<Bytes: GRPCContiguousBytes>(_ message: AuditWireEvent) throws -> Bytes {
    Bytes(message.batch.bytes[message.batch.ranges[message.index]])
  }
}
