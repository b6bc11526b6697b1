/// Identifies an aggregate, the consistency boundary for optimistic concurrency: e.g. kind `"sandbox"`,
/// id `"<uuid>"`. Limits: `kind` and `id` are at most 65,535 bytes of UTF-8 each and `kind` must not be
/// empty.
public struct AggregateRef: Hashable, Sendable, Codable, CustomStringConvertible {
  /// Aggregate kind, e.g. `"sandbox"`.
  public var kind: String
  /// Aggregate id within its kind.
  public var id: String
  /// The aggregate `kind`/`id` (limits in the type's documentation, checked at append).
  public init(kind: String, id: String) {
    self.kind = kind
    self.id = id
  }
  /// `kind/id`, e.g. `sandbox/<uuid>`.
  public var description: String { "\(kind)/\(id)" }
}

/// An event to append.
///
/// `payload` holds the *uncompressed* schema'd bytes (protobuf in this project); the log compresses them.
/// Limits (checked, `.invalidArgument` otherwise): `type` 1–255 bytes UTF-8; `actor`, `requestID`,
/// aggregate kind/id at most 65,535 bytes each; `payload` at most ``EventLog/maxPayloadBytes`` bytes.
public struct NewEvent: Sendable, Hashable {
  /// Event type name, e.g. `"sandbox.requested"`.
  public var type: String
  /// The aggregate the event belongs to; its version grows by one per event.
  public var aggregate: AggregateRef
  /// Authenticated identity that caused the event, or `"system"`.
  public var actor: String
  /// Request id that caused the event (may be empty).
  public var requestID: String
  /// Payload encoding/schema version.
  public var payloadVersion: UInt16
  /// Uncompressed payload bytes.
  public var payload: [UInt8]
  /// Event time in ns since the Unix epoch (UTC); `nil` means the wall clock when `append` is called.
  public var timestampNs: UInt64?

  /// An event to append; `timestampNs` nil = the wall clock at `append` (limits: ``EventLog/maxPayloadBytes``, strings ≤ 65,535 bytes, type 1–255 bytes).
  public init(
    type: String, aggregate: AggregateRef, actor: String, requestID: String, payloadVersion: UInt16 = 1,
    payload: [UInt8], timestampNs: UInt64? = nil
  ) {
    self.type = type
    self.aggregate = aggregate
    self.actor = actor
    self.requestID = requestID
    self.payloadVersion = payloadVersion
    self.payload = payload
    self.timestampNs = timestampNs
  }
}

/// A stored record, checksum-verified and decompressed.
public struct EventRecord: Sendable, Hashable {
  /// Sequence number, gapless from 1.
  public let seq: UInt64
  /// ns since the Unix epoch, UTC.
  public let timestampNs: UInt64
  /// Event type name.
  public let type: String
  /// The aggregate the event belongs to.
  public let aggregate: AggregateRef
  /// Identity that caused the event.
  public let actor: String
  /// Request id that caused the event.
  public let requestID: String
  /// Payload encoding/schema version.
  public let payloadVersion: UInt16
  /// zstd dictionary the payload was compressed with; 0 = none.
  public let dictionaryID: UInt32
  /// Decompressed payload bytes.
  public let payload: [UInt8]
  /// SHA-256 chain hash of this record (32 bytes); see ``RecordFormat``.
  public let hash: [UInt8]
  /// Chain hash of the previous record (32 bytes; all zeros for seq 1).
  public let previousHash: [UInt8]
  /// Size in bytes of the stored LMDB value (header + compressed payload + checksum).
  public let storedSize: Int

  /// A record as read back (the fields above; `hash` and `previousHash` are 32 bytes each).
  public init(
    seq: UInt64, timestampNs: UInt64, type: String, aggregate: AggregateRef, actor: String,
    requestID: String, payloadVersion: UInt16, dictionaryID: UInt32, payload: [UInt8], hash: [UInt8],
    previousHash: [UInt8], storedSize: Int
  ) {
    self.seq = seq
    self.timestampNs = timestampNs
    self.type = type
    self.aggregate = aggregate
    self.actor = actor
    self.requestID = requestID
    self.payloadVersion = payloadVersion
    self.dictionaryID = dictionaryID
    self.payload = payload
    self.hash = hash
    self.previousHash = previousHash
    self.storedSize = storedSize
  }
}

/// Optimistic-concurrency expectation for one aggregate. An aggregate's *version* is the number of events
/// stored for it (0 = no events).
public enum ExpectedVersion: Sendable, Hashable, CustomStringConvertible {
  /// No check.
  case any
  /// The aggregate must have no events yet (version 0).
  case noStream
  /// The aggregate must have exactly this many events.
  case exact(UInt64)

  func accepts(_ actual: UInt64) -> Bool {
    switch self {
    case .any: return true
    case .noStream: return actual == 0
    case .exact(let n): return actual == n
    }
  }

  /// `any`, `noStream` or `exact(n)`.
  public var description: String {
    switch self {
    case .any: return "any"
    case .noStream: return "noStream"
    case .exact(let n): return "exact(\(n))"
    }
  }
}

/// Selects records during reads and subscriptions. All set criteria must hold (AND); `nil` means "any".
/// Times are ns since the Unix epoch (UTC); `sinceNs` is inclusive, `untilNs` exclusive.
public struct EventFilter: Sendable, Hashable {
  /// Only this aggregate.
  public var aggregate: AggregateRef?
  /// Only aggregates of this kind.
  public var aggregateKind: String?
  /// Only these event types.
  public var types: Set<String>?
  /// Only records with `timestampNs >= sinceNs`.
  public var sinceNs: UInt64?
  /// Only records with `timestampNs < untilNs`.
  public var untilNs: UInt64?

  /// A filter with the given criteria; every `nil` matches everything.
  public init(
    aggregate: AggregateRef? = nil, aggregateKind: String? = nil, types: Set<String>? = nil,
    sinceNs: UInt64? = nil, untilNs: UInt64? = nil
  ) {
    self.aggregate = aggregate
    self.aggregateKind = aggregateKind
    self.types = types
    self.sinceNs = sinceNs
    self.untilNs = untilNs
  }

  /// Matches everything.
  public static let all = EventFilter()

  /// True if every criterion matches; works on header fields only, so it is cheap before decompression.
  func matches(type: String, kind: String, id: String, timestampNs: UInt64) -> Bool {
    if let a = aggregate, a.kind != kind || a.id != id { return false }
    if let k = aggregateKind, k != kind { return false }
    if let t = types, !t.contains(type) { return false }
    if let s = sinceNs, timestampNs < s { return false }
    if let u = untilNs, timestampNs >= u { return false }
    return true
  }

  /// True if `r` satisfies every set criterion.
  public func matches(_ r: EventRecord) -> Bool {
    matches(type: r.type, kind: r.aggregate.kind, id: r.aggregate.id, timestampNs: r.timestampNs)
  }

  var isAll: Bool { self == .all }
}
