import CLMDB

extension EventLog {
  /// A chunked reader over records with seq in `from...through` (through defaults to the head at each
  /// refill, i.e. the reader sees records appended while it runs) that match `filter`.
  /// Each refill is one short read transaction over at most `chunkSize` records.
  public func read(
    from: UInt64, through: UInt64? = nil, filter: EventFilter = .all, chunkSize: Int = 512
  ) -> EventLogReader {
    EventLogReader(
      shared: shared, nextSeq: max(from, 1), through: through ?? .max, filter: filter,
      chunkSize: max(1, chunkSize))
  }

  /// Calls `body` for every record with seq in `from...through` matching `filter`, in seq order.
  /// Records are read in chunks of at most `chunkSize` records, each in its own short read transaction;
  /// `body` runs outside any transaction (it may append). Throws `.corrupt` (naming the seq) on bad
  /// bytes, `.closed`, or what `body` throws.
  public func forEach(
    from: UInt64, through: UInt64? = nil, filter: EventFilter = .all, chunkSize: Int = 512,
    _ body: (EventRecord) throws -> Void
  ) throws {
    try checkOpen()
    var reader = read(from: from, through: through, filter: filter, chunkSize: chunkSize)
    while let r = try reader.next() { try body(r) }
  }

  /// Collects at most `limit` matching records with seq in `from...through` (chunked like ``forEach``).
  public func records(
    from: UInt64, through: UInt64? = nil, filter: EventFilter = .all, limit: Int = .max
  ) throws -> [EventRecord] {
    try checkOpen()
    var out: [EventRecord] = []
    guard limit > 0 else { return out }
    var reader = read(from: from, through: through, filter: filter, chunkSize: 512)
    while let r = try reader.next() {
      out.append(r)
      if out.count >= limit { break }
    }
    return out
  }

  /// The record stored under `seq`, or nil if there is none. Throws `.corrupt` if its bytes are bad.
  public func record(at seq: UInt64) throws -> EventRecord? {
    try checkOpen()
    return try shared.env.withRead { txn in
      try txn.withValue(shared.env.dbs.events, seqKey(seq)) { v in
        try shared.decode(RecordFormat.parse(v, key: seq), txn: txn, previousHash: nil)
      }
    }
  }

  /// Catch-up subscription from `seq` (inclusive) with no gap and no duplicate.
  ///
  /// The subscriber registers for live records first, then reads history in chunks up to the live point,
  /// then drains live records (skipping ones already sent). Its live buffer holds at most
  /// `Options.subscriberBufferSize` records (the consumer may hold one more drained batch of that size); if
  /// it overflows, the stream yields `.fellBehind(lastDelivered:)` and continues from history — the writer is
  /// never blocked. With `Options.readOnly` (another process writes) the live phase polls every 50 ms.
  /// The stream finishes when the log closes or the consuming task is cancelled; it throws `.corrupt` on
  /// bad bytes. One consumer per stream.
  public func subscribe(from seq: UInt64, filter: EventFilter = .all) -> AsyncThrowingStream<SubscriptionEvent, Error> {
    let sub = Subscription(shared: shared, from: seq, filter: filter, live: !isReadOnly)
    return AsyncThrowingStream(unfolding: { try await sub.next() })
  }

  /// Number of subscriptions currently registered for live records.
  public var liveSubscriberCount: Int { shared.hub.count }
}
