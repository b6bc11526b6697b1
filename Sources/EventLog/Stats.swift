import CLMDB
import Foundation

/// Storage statistics (see ``EventLog/stats()``). Sizes are bytes.
public struct LogStats: Sendable, Hashable {
  /// Records in the `events` database.
  public var records: UInt64
  /// The seq of the newest record (`meta` head.seq); 0 for an empty log.
  public var headSeq: UInt64
  /// Size of `data.mdb` on disk (apparent size).
  public var fileBytes: UInt64
  /// Current LMDB map size.
  public var mapSize: Int
  /// Bytes of the map in use: (last used page + 1) × page size (`mdb_env_info`, `mdb_env_stat`).
  public var usedBytes: Int
  /// Sum of stored record value sizes (headers, compressed payloads, checksums).
  public var storedBytes: UInt64
  /// Sum of stored (compressed or raw) payload sizes; for v2/v3 records the stored body (header strings and
  /// payload, compressed together; a v3 single block without its frame and block headers).
  public var storedPayloadBytes: UInt64
  /// Sum of uncompressed payload sizes (v2, v3: body sizes).
  public var uncompressedPayloadBytes: UInt64
  /// Records per dictionary id (0 = no dictionary, including raw payloads).
  public var recordsPerDictionary: [UInt32: UInt64]
  /// Stored payload bytes per dictionary id.
  public var storedPayloadBytesPerDictionary: [UInt32: UInt64]
  /// The dictionary new records are compressed with; 0 = none trained yet.
  public var activeDictionaryID: UInt32
  /// Pages (branch + leaf + overflow, `mdb_stat`) per named database (`events`, `aggregates`, `chain`, ...);
  /// times ``pageSize``, what each takes of `usedBytes`.
  public var pagesPerDatabase: [String: Int]
  /// LMDB page size in bytes.
  public var pageSize: Int
  /// Counters of this process's writer (zeros for read-only opens).
  public var writer: WriterStats
}

extension EventLog {
  /// Scans every record header in chunks (checksums included, payloads not decompressed) and reports sizes.
  /// Throws `.corrupt` on a bad record, `.closed`.
  public func stats() throws -> LogStats {
    try checkOpen()
    var s = LogStats(
      records: 0, headSeq: 0, fileBytes: 0, mapSize: 0, usedBytes: 0, storedBytes: 0,
      storedPayloadBytes: 0, uncompressedPayloadBytes: 0, recordsPerDictionary: [:],
      storedPayloadBytesPerDictionary: [:], activeDictionaryID: 0, pagesPerDatabase: [:], pageSize: 0,
      writer: writerStats)
    let head = currentHead()
    s.headSeq = head.headSeq
    s.activeDictionaryID = head.activeDictionaryID
    let info = shared.env.info()
    s.mapSize = info.mapSize
    s.usedBytes = info.usedBytes
    if let attrs = try? FileManager.default.attributesOfItem(atPath: directory + "/data.mdb"),
      let size = attrs[.size] as? NSNumber
    {
      s.fileBytes = size.uint64Value
    }
    s.pageSize = info.pageSize
    let dbs = shared.env.dbs
    let named = zip(Databases.names, [dbs.events, dbs.meta, dbs.snapshots, dbs.checkpoints, dbs.dicts, dbs.aggregates])
    try shared.env.withRead { txn in
      for (name, dbi) in named { s.pagesPerDatabase[name] = try txn.pages(dbi) }
      if let chain = dbs.chain { s.pagesPerDatabase[ChainCheckpoints.name] = try txn.pages(chain) }
    }
    var next: UInt64 = 1
    while true {
      let last: UInt64? = try shared.env.withRead { txn in
        let c = try txn.cursor(shared.env.dbs.events)
        defer { c.close() }
        var op = MDB_SET_RANGE
        var key: [UInt8]? = seqKey(next)
        var last: UInt64?
        for _ in 0..<4096 {
          let seq: UInt64? = try c.get(op, key: key) { k, v in
            guard let seq = decodeBE64(k) else { throw EventLogError.corrupt(nil, "malformed events key") }
            let h = try RecordFormat.parse(v, key: seq)
            s.records += 1
            s.storedBytes += UInt64(v.count)
            s.storedPayloadBytes += UInt64(h.stored.count)
            s.uncompressedPayloadBytes += UInt64(h.uncompressedLength)
            s.recordsPerDictionary[h.dictionaryID, default: 0] += 1
            s.storedPayloadBytesPerDictionary[h.dictionaryID, default: 0] += UInt64(h.stored.count)
            return seq
          }
          guard let seq else { break }
          last = seq
          op = MDB_NEXT
          key = nil
        }
        return last
      }
      guard let last, last < .max else { break }
      next = last + 1
    }
    return s
  }
}
