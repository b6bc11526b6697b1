import CLMDB

/// One record as a sequential read finds it, its fields borrowed from the read's buffers: no `EventRecord`,
/// no copy of the payload, no `String` for the per-record header fields (issue 12: the audit watch's catch-up
/// spent most of its time making and freeing those). Valid only inside the closure of
/// ``EventLog/visitRecords(from:through:limit:_:)`` that received it.
///
/// The repeating short header fields (type, aggregate kind, actor) are strings shared between records (one
/// `String` per distinct value, reused). The aggregate id and the request id are valid UTF-8 bytes (checked).
/// No chain hash is computed: each record's stored bytes are checked by their CRC-32C as they are read, the
/// chain is what `verify` and the start's check prove.
public struct BorrowedRecord {
  /// Sequence number, gapless from 1.
  public let seq: UInt64
  /// ns since the Unix epoch, UTC.
  public let timestampNs: UInt64
  /// Payload encoding/schema version.
  public let payloadVersion: UInt16
  /// Event type name.
  public let type: String
  /// The aggregate's kind.
  public let kind: String
  /// Identity that caused the event.
  public let actor: String
  /// The aggregate's id, UTF-8.
  public let id: UnsafeRawBufferPointer
  /// Request id that caused the event, UTF-8.
  public let requestID: UnsafeRawBufferPointer
  /// Decompressed payload bytes.
  public let payload: UnsafeRawBufferPointer
  /// zstd dictionary the payload was compressed with; 0 = none.
  public let dictionaryID: UInt32
  /// Size in bytes of the stored LMDB value.
  public let storedSize: Int

  /// The aggregate id as a string (allocates).
  public var idString: String { String(decoding: id, as: UTF8.self) }
  /// The request id as a string (allocates).
  public var requestIDString: String { String(decoding: requestID, as: UTF8.self) }

  /// An owned copy for code that needs an ``EventRecord`` (decoding the payload, rendering it), with its chain
  /// hash left out: `hash` and `previousHash` are 32 zero bytes, since a borrowing read does not compute the
  /// chain. Never hand it to anything that checks or stores chain hashes.
  public func unchainedRecord() -> EventRecord {
    EventRecord(
      seq: seq, timestampNs: timestampNs, type: type, aggregate: AggregateRef(kind: kind, id: idString), actor: actor,
      requestID: requestIDString, payloadVersion: payloadVersion, dictionaryID: dictionaryID, payload: Array(payload),
      hash: RecordFormat.zeroHash, previousHash: RecordFormat.zeroHash, storedSize: storedSize)
  }
}

extension EventLog {
  /// Calls `body` for each record with seq in `from...through`, in seq order, at most `limit` records, all in
  /// ONE read transaction (keep `limit` to a few thousand so that the transaction stays short), each as a
  /// ``BorrowedRecord`` valid only during its call. `body` returns false to stop early.
  ///
  /// Returns the seq of the last record passed to `body`, or nil when there was none. A sequential reader that
  /// needs no owned records and no chain hash: the audit watch's history pages (issue 12).
  /// - Throws: `.corrupt` naming the seq when a record's bytes are bad or a record below the head is missing
  ///   from the range, `.closed`, or what `body` throws.
  public func visitRecords(
    from: UInt64, through: UInt64, limit: Int, _ body: (BorrowedRecord) throws -> Bool
  ) throws -> UInt64? {
    try checkOpen()
    guard from <= through, limit > 0 else { return nil }
    return try shared.visitChunk(from: max(from, 1), through: through, limit: limit, body)
  }
}

extension LogShared {
  /// ``EventLog/visitRecords(from:through:limit:_:)`` in one read transaction.
  func visitChunk(
    from: UInt64, through: UInt64, limit: Int, _ body: (BorrowedRecord) throws -> Bool
  ) throws -> UInt64? {
    try env.withRead { txn in
      let cursor = try txn.cursor(env.dbs.events)
      defer { cursor.close() }
      let ctx = RecordDecoder(shared: self)
      var last: UInt64?
      var visited = 0
      var op = MDB_SET_RANGE
      var key: [UInt8]? = seqKey(from)
      // Seqs are gapless: the next key must be `expected`. A missing record is `.corrupt` naming it, as the
      // owned reader's chain finds it, never a record silently left out of an audit trail.
      var expected = from
      while visited < limit {
        let more: Bool? = try cursor.get(op, key: key) { k, v in
          guard let seq = decodeBE64(k) else { throw EventLogError.corrupt(nil, "events key of \(k.count) bytes") }
          if seq != expected, expected <= through { throw missing(expected, next: seq) }
          if seq > through { return false }
          last = seq
          expected = seq &+ 1  // (a key of UInt64.max cannot exist below a head reached from 1)
          return try borrow(RecordFormat.parse(v, key: seq), txn: txn, context: ctx, body)
        }
        if more == nil, expected <= through, try readHeadState(txn, env.dbs).headSeq >= expected {
          throw missing(expected, next: nil)
        }
        guard more == true else { break }
        visited += 1
        op = MDB_NEXT
        key = nil
      }
      return last
    }
  }

  /// `.corrupt` for record `seq`, absent from the `events` database below the head (`next`: the next seq stored).
  private func missing(_ seq: UInt64, next: UInt64?) -> EventLogError {
    .corrupt(seq, "record \(seq) is missing (next stored seq is \(next.map(String.init) ?? "none"))")
  }

  /// Decompresses one parsed record into `context`'s buffer and passes it to `body` borrowed. A v1 record
  /// (its header strings are outside the body) is decoded whole and lent from the owned record.
  private func borrow(
    _ h: RecordFormat.Header, txn: Transaction, context ctx: RecordDecoder, _ body: (BorrowedRecord) throws -> Bool
  ) throws -> Bool {
    if h.v1 != nil {
      let r = try decode(h, txn: txn, previousHash: nil, context: ctx)
      var id = r.aggregate.id
      var requestID = r.requestID
      return try id.withUTF8 { i in
        try requestID.withUTF8 { q in
          try r.payload.withUnsafeBytes { p in
            try body(
              BorrowedRecord(
                seq: r.seq, timestampNs: r.timestampNs, payloadVersion: r.payloadVersion, type: r.type,
                kind: r.aggregate.kind, actor: r.actor, id: UnsafeRawBufferPointer(i), requestID: UnsafeRawBufferPointer(q),
                payload: p, dictionaryID: r.dictionaryID, storedSize: r.storedSize))
          }
        }
      }
    }
    let b = try self.body(of: h, txn: txn, context: ctx)
    let s = try RecordFormat.sliceBody(b, seq: h.seq)
    guard let type = ctx.strings.string(s.type), let kind = ctx.strings.string(s.kind),
      let actor = ctx.strings.string(s.actor), isValidUTF8(s.id), isValidUTF8(s.requestID)
    else { throw EventLogError.corrupt(h.seq, "record \(h.seq): body: truncated or invalid UTF-8 header strings") }
    return try body(
      BorrowedRecord(
        seq: h.seq, timestampNs: h.timestampNs, payloadVersion: s.payloadVersion, type: type, kind: kind, actor: actor,
        id: s.id, requestID: s.requestID, payload: s.payload, dictionaryID: h.dictionaryID, storedSize: h.storedSize))
  }
}

/// True if `b` is valid UTF-8 (ASCII checked 8 bytes per step, anything else by the standard library).
func isValidUTF8(_ b: UnsafeRawBufferPointer) -> Bool {
  isASCII(b) || String(validating: b, as: UTF8.self) != nil
}
