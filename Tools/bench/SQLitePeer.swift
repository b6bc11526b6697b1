import EventLog
import Foundation
import GRDB
import Projections

/// The peer: the same events in SQLite through GRDB (WAL, one transaction per append batch), payloads
/// stored uncompressed, in a table shaped like our record header.
final class SQLitePeer: Sendable {
  let pool: DatabasePool
  let path: String

  enum Sync: String, Sendable {
    case full = "FULL"
    case normal = "NORMAL"
    /// No flushes per commit (bulk loads; ``flushToDisk()`` makes the result durable once).
    case off = "OFF"
  }

  init(path: String, synchronous: Sync) throws {
    self.path = path
    // DatabasePool always uses WAL and sets synchronous=NORMAL on its writer connection after
    // `prepareDatabase`; the pool has exactly one writer connection, so set the pragma on it afterwards.
    pool = try DatabasePool(path: path)
    try pool.writeWithoutTransaction { db in
      try db.execute(sql: "PRAGMA synchronous = \(synchronous.rawValue)")
    }
    try pool.write { db in
      try db.execute(
        sql: """
          CREATE TABLE IF NOT EXISTS events (
            seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, type TEXT NOT NULL, agg_kind TEXT NOT NULL,
            agg_id TEXT NOT NULL, actor TEXT NOT NULL, request_id TEXT NOT NULL, payload BLOB NOT NULL)
          """)
    }
  }

  /// `journal_mode` and `synchronous` as SQLite reports them on a writer connection.
  func pragmas() throws -> String {
    try pool.write { db in
      let jm = try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "?"
      let sync = try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1
      return "journal_mode=\(jm) synchronous=\(sync)"
    }
  }

  private static let insertSQL =
    "INSERT INTO events (ts, type, agg_kind, agg_id, actor, request_id, payload) VALUES (?, ?, ?, ?, ?, ?, ?)"

  private static func insert(_ db: Database, _ events: [NewEvent]) throws {
    let stmt = try db.cachedStatement(sql: insertSQL)
    let now = Int64(wallNs())
    for e in events {
      try stmt.execute(arguments: [
        Int64(e.timestampNs ?? UInt64(now)), e.type, e.aggregate.kind, e.aggregate.id, e.actor, e.requestID,
        Data(e.payload),
      ])
    }
  }

  /// One transaction for the batch (async: callers are concurrent tasks; GRDB serialises writers).
  func append(_ events: [NewEvent]) async throws {
    try await pool.write { db in try Self.insert(db, events) }
  }

  /// Blocking variant for bulk loads.
  func appendSync(_ events: [NewEvent]) throws {
    try pool.write { db in try Self.insert(db, events) }
  }

  /// Reads every row in seq order in chunks (one read transaction per chunk) as `EventRecord`s.
  func forEach(chunk: Int = 4096, _ body: (EventRecord) throws -> Void) throws {
    var last: Int64 = 0
    while true {
      let rows: [EventRecord] = try pool.read { db in
        var out: [EventRecord] = []
        out.reserveCapacity(chunk)
        let cursor = try Row.fetchCursor(
          db, sql: "SELECT seq, ts, type, agg_kind, agg_id, actor, request_id, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
          arguments: [last, chunk])
        while let row = try cursor.next() {
          let payload: Data = row[7]
          out.append(
            EventRecord(
              seq: UInt64(row[0] as Int64), timestampNs: UInt64(row[1] as Int64), type: row[2],
              aggregate: AggregateRef(kind: row[3], id: row[4]), actor: row[5], requestID: row[6],
              payloadVersion: gatewayEventSchemaVersion, dictionaryID: 0, payload: [UInt8](payload), hash: [],
              previousHash: [], storedSize: payload.count))
        }
        return out
      }
      guard let tail = rows.last else { return }
      for r in rows { try body(r) }
      last = Int64(tail.seq)
    }
  }

  /// Checkpoints the WAL and returns (rows, database file bytes).
  func sizeAfterCheckpoint() throws -> (rows: Int, bytes: Int) {
    try pool.writeWithoutTransaction { db in
      try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
    }
    let rows = try pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM events") ?? 0 }
    let bytes = fileSize(path) + fileSize(path + "-wal")
    return (rows, bytes)
  }

  /// Checkpoints the WAL into the database file and fsyncs it and its directory (the end of a bulk load
  /// with `synchronous=OFF`).
  func flushToDisk() throws {
    try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
    for p in [path, (path as NSString).deletingLastPathComponent] {
      let fd = open(p, O_RDONLY | O_CLOEXEC)
      guard fd >= 0 else { throw CocoaError(.fileReadUnknown) }
      defer { Glibc.close(fd) }
      guard fsync(fd) == 0 else { throw CocoaError(.fileWriteUnknown) }
    }
  }

  func close() throws { try pool.close() }
}

func fileSize(_ path: String) -> Int {
  ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
}
