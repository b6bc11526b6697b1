import CLMDB
import Synchronization

extension EventLog {
  /// Trains a zstd dictionary (`ZDICT_trainFromBuffer`, at most `dictionarySize` bytes) on the v2 bodies
  /// (header strings + payload, what new records compress) of the newest `sampleLimit` records, stores it in `dicts` under the next id (ids start at 1; 0 means no
  /// dictionary) and makes it the active dictionary for new appends, in one write transaction.
  ///
  /// Records keep the id of the dictionary they were written with and dictionaries are never deleted, so old
  /// records stay readable. Returns the new id. Throws `.invalidArgument` if there are too few non-empty
  /// payloads (at least 8) or zstd cannot train on them, `.readOnly`, `.closed`.
  @discardableResult
  public func trainDictionary(sampleLimit: Int = 10_000, dictionarySize: Int = 16 << 10) throws -> UInt32 {
    _ = try requireWriter()
    guard sampleLimit > 0, dictionarySize >= 256 else {
      throw EventLogError.invalid("sampleLimit must be > 0 and dictionarySize >= 256 bytes")
    }
    let head = headSeq
    let from = head > UInt64(sampleLimit) ? head - UInt64(sampleLimit) + 1 : 1
    var samples: [[UInt8]] = []
    try forEach(from: from, through: head) { r in
      samples.append(RecordFormat.body(of: r))
    }
    let dict = try trainZstdDictionary(samples: samples, capacity: dictionarySize)
    let result = ResultBox()
    try performWrite { [shared] txn, _ in
      let c = try txn.cursor(shared.env.dbs.dicts)
      let lastID: UInt32 =
        try c.get(MDB_LAST) { k, _ in
          var r = ByteReader(k)
          return k.count == 4 ? r.u32() ?? 0 : 0
        } ?? 0
      c.close()
      guard lastID < UInt32.max else { throw EventLogError.invalid("dictionary ids exhausted") }
      let id = lastID + 1
      try txn.put(shared.env.dbs.dicts, dictKey(id), dict)
      var v = [UInt8]()
      v.appendBE(id)
      try txn.put(shared.env.dbs.meta, MetaKey.activeDictionary, v)
      result.set(id)
    }
    shared.logger.info(
      "zstd dictionary trained", metadata: ["bytes": "\(dict.count)", "samples": "\(samples.count)"])
    return result.get()
  }

  /// The stored dictionary ids (ascending) and their sizes in bytes.
  public func dictionaries() throws -> [(id: UInt32, bytes: Int)] {
    try checkOpen()
    return try shared.env.withRead { txn in
      let c = try txn.cursor(shared.env.dbs.dicts)
      defer { c.close() }
      var out: [(id: UInt32, bytes: Int)] = []
      var op = MDB_FIRST
      while let item = try c.get(
        op,
        { k, v -> (UInt32, Int) in
          var r = ByteReader(k)
          return (k.count == 4 ? r.u32() ?? 0 : 0, v.count)
        })
      {
        out.append((id: item.0, bytes: item.1))
        op = MDB_NEXT
      }
      return out
    }
  }
}

/// Carries a value out of a writer job.
private final class ResultBox: Sendable {
  private let value = Mutex<UInt32>(0)
  func set(_ v: UInt32) { value.withLock { $0 = v } }
  func get() -> UInt32 { value.withLock { $0 } }
}
