import CLMDB
import Logging
import Synchronization

/// State shared by the log facade, the writer thread and subscriptions.
final class LogShared: Sendable {
  let env: LMDBEnvironment
  let options: EventLog.Options
  let dicts: DictionaryCache
  let decompressors = DecompressorPool()
  let hub = SubscriptionHub()
  let state: Mutex<PublishedState>
  let counters = WriterCounters()
  let logger: Logger
  let directory: String
  /// True from ``EventLog/openForBulkLoad(directory:options:)`` until ``EventLog/finishBulkLoad()``.
  let bulkLoading: Atomic<Bool>

  init(env: LMDBEnvironment, directory: String, options: EventLog.Options, head: PublishedState, logger: Logger) {
    self.env = env
    self.directory = directory
    self.options = options
    self.dicts = DictionaryCache(level: options.compressionLevelWithDictionary)
    self.state = Mutex(head)
    self.logger = logger
    bulkLoading = Atomic(options.bulkLoad)
  }

  /// Loads dictionary `id` (cached) using `txn`.
  func dictionary(_ id: UInt32, txn: Transaction) throws -> ZstdDictionary {
    try dicts.dictionary(id) { try txn.get(env.dbs.dicts, dictKey(id)) }
  }

  /// Loads dictionary `id` (cached) in its own read transaction.
  func dictionary(_ id: UInt32) throws -> ZstdDictionary {
    try dicts.dictionary(id) { try env.withRead { try $0.get(env.dbs.dicts, dictKey(id)) } }
  }

  /// Decompresses and hashes a parsed record of either version. `previousHash` is the chain hash of the
  /// record before: a v1 record carries its own (the argument is ignored); for a v2 or v3 record nil means
  /// "look it up" (``hashBefore(_:txn:)``). `context` carries buffers between the records of one read (a fresh one
  /// when nil). Failures are `.corrupt` naming the record.
  func decode(
    _ h: RecordFormat.Header, txn: Transaction, previousHash: [UInt8]?, context: RecordDecoder? = nil
  ) throws -> EventRecord {
    let ctx = context ?? RecordDecoder(shared: self)
    if let v = h.v1 {
      let dict = try dictionary(for: h, txn: txn, context: ctx)
      let payload: [UInt8]
      if h.isRaw {
        payload = Array(h.stored)
      } else {
        switch decompressors.decompress(h.stored, length: h.uncompressedLength, dict: dict) {
        case .success(let p): payload = p
        case .failure(let e): throw EventLogError.corrupt(h.seq, "record \(h.seq): payload: \(e.description)")
        }
      }
      let prev = v.previousHash
      let hash = payload.withUnsafeBytes {
        ctx.hasher.hash(
          previousHash: prev, seq: h.seq, timestampNs: h.timestampNs, payloadVersion: v.payloadVersion,
          type: v.type, kind: v.kind, id: v.id, actor: v.actor, requestID: v.requestID, payload: $0)
      }
      return EventRecord(
        seq: h.seq, timestampNs: h.timestampNs, type: v.type, aggregate: AggregateRef(kind: v.kind, id: v.id),
        actor: v.actor, requestID: v.requestID, payloadVersion: v.payloadVersion, dictionaryID: h.dictionaryID,
        payload: payload, hash: hash, previousHash: prev, storedSize: h.storedSize)
    }
    let body = try self.body(of: h, txn: txn, context: ctx)
    // v2, v3: the chain hash reads the header strings' bytes straight from the body; the strings are made once,
    // for the record (issue 14: no intermediate field copies per record).
    let s = try RecordFormat.sliceBody(body, seq: h.seq)
    let strings = try RecordFormat.strings(of: s, seq: h.seq, strings: ctx.strings)
    let prev = try previousHash ?? hashBefore(h.seq, txn: txn)
    let hash = ctx.hasher.hash(
      previousHash: prev, seq: h.seq, timestampNs: h.timestampNs, payloadVersion: s.payloadVersion, type: s.type,
      kind: s.kind, id: s.id, actor: s.actor, requestID: s.requestID, payload: s.payload)
    return EventRecord(
      seq: h.seq, timestampNs: h.timestampNs, type: strings.type, aggregate: AggregateRef(kind: strings.kind, id: strings.id),
      actor: strings.actor, requestID: strings.requestID, payloadVersion: s.payloadVersion, dictionaryID: h.dictionaryID,
      payload: Array(s.payload), hash: hash, previousHash: prev, storedSize: h.storedSize)
  }

  /// The zstd dictionary a record was compressed with (nil for a raw record or none), kept in `context` for
  /// the records after it. A missing or damaged dictionary is `.corrupt` naming the record.
  func dictionary(for h: RecordFormat.Header, txn: Transaction, context ctx: RecordDecoder) throws -> ZstdDictionary? {
    if h.isRaw || h.dictionaryID == 0 { return nil }
    if let d = ctx.dictionary, d.id == h.dictionaryID { return d }
    do {
      let d = try dictionary(h.dictionaryID, txn: txn)
      ctx.dictionary = d
      return d
    } catch let e as EventLogError where e.code == .corrupt {
      throw EventLogError.corrupt(h.seq, "record \(h.seq): \(e.message)")
    }
  }

  /// The uncompressed body of a v2 or v3 record: its stored bytes when raw, else decompressed into
  /// `context`'s buffer (valid until the next record decoded with it). Failures are `.corrupt` naming the record.
  func body(of h: RecordFormat.Header, txn: Transaction, context ctx: RecordDecoder) throws -> UnsafeRawBufferPointer {
    if h.isRaw { return h.stored }
    let dict = try dictionary(for: h, txn: txn, context: ctx)
    switch ctx.body.decompressBody(h.stored, length: h.uncompressedLength, dict: dict, block: h.isBlock) {
    case .success(let b): return b
    case .failure(let e): throw EventLogError.corrupt(h.seq, "record \(h.seq): body: \(e.description)")
    }
  }

  /// Reads one chunk in ONE short read transaction: scans at most `limit` records with seq in
  /// `from...through`, returns those matching `filter`, the last seq scanned (nil if none) and the chain
  /// position after it (pass it back as `chain` for the next chunk so v2 and v3 records need no checkpoint
  /// lookup).
  ///
  /// A v2 or v3 record's header strings are inside its compressed body, so every such record scanned is
  /// decoded (and hashed, to carry the chain); a v1 record is decoded only when it matches.
  func readChunk(
    from: UInt64, through: UInt64, filter: EventFilter, limit: Int, chain: ChainPosition? = nil
  ) throws -> (records: [EventRecord], lastScanned: UInt64?, chain: ChainPosition?) {
    var out: [EventRecord] = []
    let (last, position) = try readChunk(into: &out, from: from, through: through, filter: filter, limit: limit, chain: chain)
    return (out, last, position)
  }

  /// ``readChunk(from:through:filter:limit:chain:)`` appending to `out`, so a sequential reader reuses one
  /// buffer for all its chunks (issue 14: a fresh ~0.5 MB array per 4096-record chunk cost page faults and
  /// malloc consolidation on every chunk of a replay). On a throw, `out` may hold some of the chunk's records.
  func readChunk(
    into out: inout [EventRecord], from: UInt64, through: UInt64, filter: EventFilter, limit: Int,
    chain: ChainPosition? = nil
  ) throws -> (lastScanned: UInt64?, chain: ChainPosition?) {
    guard from <= through, limit > 0 else { return (nil, chain) }
    return try env.withRead { txn in
      let cursor = try txn.cursor(env.dbs.events)
      defer { cursor.close() }
      var last: UInt64?
      var scanned = 0
      var op = MDB_SET_RANGE
      var key: [UInt8]? = seqKey(from)
      var position = chain
      let ctx = RecordDecoder(shared: self)
      let all = filter.isAll
      out.reserveCapacity(out.count + min(limit, 4096))
      while scanned < limit {
        let more: Bool? = try cursor.get(op, key: key) { k, v in
          guard let seq = decodeBE64(k) else { throw EventLogError.corrupt(nil, "events key of \(k.count) bytes") }
          if seq > through { return false }
          let h = try RecordFormat.parse(v, key: seq)
          if let f = h.v1, !all,
            !filter.matches(type: f.type, kind: f.kind, id: f.id, timestampNs: h.timestampNs)
          {
            position = nil
          } else {
            let prev = position.flatMap { $0.seq == seq - 1 ? $0.hash : nil }
            let r = try decode(h, txn: txn, previousHash: prev, context: ctx)
            position = ChainPosition(seq: seq, hash: r.hash)
            if all || filter.matches(r) { out.append(r) }
          }
          last = seq
          return true
        }
        guard more == true else { break }
        scanned += 1
        op = MDB_NEXT
        key = nil
      }
      return (last, position)
    }
  }

  /// Current head from the `meta` database (used by read-only opens, where another process writes).
  func readHead() throws -> PublishedState {
    try env.withRead { txn in try readHeadState(txn, env.dbs) }
  }
}

/// State reused between the records of one read: a zstd context with its buffers, the chain hasher's buffer
/// and the last dictionary used. One thread at a time.
final class RecordDecoder {
  let body: BodyDecoder
  // One thread at a time (above): no dynamic exclusivity checks on the per-record state.
  @exclusivity(unchecked) var hasher = ChainHasher()
  @exclusivity(unchecked) var dictionary: ZstdDictionary?
  let strings = StringInterner()

  init(shared: LogShared) { body = BodyDecoder(pool: shared.decompressors) }
}

/// A record's seq and chain hash, carried between chunks of a sequential read.
struct ChainPosition: Sendable {
  var seq: UInt64
  var hash: [UInt8]
}

/// Key of a dictionary in the `dicts` database: u32 big-endian id.
func dictKey(_ id: UInt32) -> [UInt8] {
  var k = [UInt8]()
  k.appendBE(id)
  return k
}

/// Reads head seq, head hash and the active dictionary id from `meta`.
func readHeadState(_ txn: Transaction, _ dbs: Databases) throws -> PublishedState {
  var s = PublishedState()
  if let v = try txn.get(dbs.meta, MetaKey.headSeq) {
    guard let n = decodeBE64(v) else { throw EventLogError.corrupt(nil, "meta head.seq is not 8 bytes") }
    s.headSeq = n
  }
  if let v = try txn.get(dbs.meta, MetaKey.headHash) {
    guard v.count == 32 else { throw EventLogError.corrupt(nil, "meta head.hash is not 32 bytes") }
    s.headHash = v
  }
  if let v = try txn.get(dbs.meta, MetaKey.activeDictionary) {
    guard let n = decodeBE32(v) else { throw EventLogError.corrupt(nil, "meta dict.active is not 4 bytes") }
    s.activeDictionaryID = n
  }
  return s
}

/// A pull-based, chunked reader: each refill is one short read transaction of at most `chunkSize` records.
/// Use `while let r = try reader.next() { … }`.
public struct EventLogReader: Sendable {
  let shared: LogShared
  var nextSeq: UInt64
  let through: UInt64
  let filter: EventFilter
  let chunkSize: Int
  var buffer: [EventRecord] = []
  var chain: ChainPosition?
  var index = 0
  var done = false

  /// The next matching record, or nil at the end. Throws `.corrupt` (with the record's seq) on bad bytes,
  /// `.closed` if the log was closed.
  public mutating func next() throws -> EventRecord? {
    while index >= buffer.count {
      if done { return nil }
      // The chunk goes into the same buffer (its capacity kept), emptied again if the read throws.
      buffer.removeAll(keepingCapacity: true)
      index = 0
      let last: UInt64?
      do {
        (last, chain) = try shared.readChunk(
          into: &buffer, from: nextSeq, through: through, filter: filter, limit: chunkSize, chain: chain)
      } catch {
        buffer.removeAll(keepingCapacity: true)
        throw error
      }
      guard let last else {
        done = true
        return nil
      }
      if last >= through || last == .max { done = true } else { nextSeq = last + 1 }
    }
    // Moved out, not copied: the slot keeps an empty record, so handing a record over costs no retain of its
    // eight reference-counted fields (and dropping the chunk no release).
    var r = EventLogReader.placeholder
    swap(&r, &buffer[index])
    index += 1
    return r
  }

  /// What a handed-over slot of `buffer` holds (empty strings and arrays: nothing to retain).
  private static let placeholder = EventRecord(
    seq: 0, timestampNs: 0, type: "", aggregate: AggregateRef(kind: "", id: ""), actor: "", requestID: "",
    payloadVersion: 0, dictionaryID: 0, payload: [], hash: [], previousHash: [], storedSize: 0)
}
