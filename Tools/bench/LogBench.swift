import EventLog
import Foundation
import Projections

/// Settings of one `openshell-bench log` run.
struct LogBenchSettings: Sendable {
  var replayEvents: Int
  var appendSeconds: Double
  var concurrencies: [Int]
  var bulkBatch: Int
  var dictEvents: Int
  var workDir: String
}

/// Results collected for the report.
struct LogBenchResults: Sendable {
  struct AppendRow: Sendable {
    var concurrency: Int
    var ours: RunResult
    var oursCommits: UInt64
    var oursLargestBatch: UInt64
    var sqliteFull: RunResult
    var sqliteNormal: RunResult
  }
  var appends: [AppendRow] = []
  var bulkOurs = 0.0, bulkSQLite = 0.0, bulkSQLiteOff = 0.0, bulkSQLiteOffCPU = 0.0
  var replayOurs = 0.0, readOurs = 0.0, replaySQLite = 0.0
  /// The same measures in events per CPU-second of the process (all threads).
  var bulkOursCPU = 0.0, bulkSQLiteCPU = 0.0, replayOursCPU = 0.0, readOursCPU = 0.0, replaySQLiteCPU = 0.0
  var replayCheck = ""
  var bytesNoDict = 0.0, bytesDict = 0.0, bytesFileNoDict = 0.0, bytesFileDict = 0.0
  var payloadRaw = 0.0, payloadNoDict = 0.0, payloadDict = 0.0, headerBytes = 0.0
  var bytesSQLite = 0.0
  /// Dictionary rows: on-disk bytes per event by LMDB database (pages added while appending them).
  var diskPerDatabaseDict: [(name: String, bytes: Double)] = []
  var sqlitePragmas = ""
}

enum LogBench {
  /// Default options (durability `.sync`), logging only warnings so the tables stay readable.
  static var quietOptions: EventLog.Options {
    var o = EventLog.Options()
    o.logger.logLevel = .warning
    return o
  }

  static func freshDir(_ base: String, _ name: String) throws -> String {
    let path = base + "/" + name
    try? FileManager.default.removeItem(atPath: path)
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
  }

  /// Concurrent durable appends, one event per call, default durability.
  static func oursAppends(_ s: LogBenchSettings, mix: EventMix, concurrency: Int) async throws
    -> (RunResult, WriterStats)
  {
    let dir = try freshDir(s.workDir, "append-ours-\(concurrency)")
    let log = try EventLog.open(directory: dir, options: quietOptions)
    defer { log.close() }
    let ticket = Ticket()
    // Warm-up (map, page cache, first commits) outside the measurement.
    for _ in 0..<20 { try await log.append([mix.event(ticket.next())]) }
    let before = log.writerStats
    let r = try await runConcurrent(concurrency: concurrency, seconds: s.appendSeconds) {
      try await log.append([mix.event(ticket.next())])
    }
    var w = log.writerStats
    w.commits -= before.commits
    w.prepareNanoseconds -= before.prepareNanoseconds
    w.transactionNanoseconds -= before.transactionNanoseconds
    w.commitNanoseconds -= before.commitNanoseconds
    w.resumeNanoseconds -= before.resumeNanoseconds
    return (r, w)
  }

  static func sqliteAppends(_ s: LogBenchSettings, mix: EventMix, concurrency: Int, sync: SQLitePeer.Sync)
    async throws -> (RunResult, String)
  {
    let dir = try freshDir(s.workDir, "append-sqlite-\(sync.rawValue)-\(concurrency)")
    let db = try SQLitePeer(path: dir + "/events.sqlite", synchronous: sync)
    let pragmas = try db.pragmas()
    let ticket = Ticket()
    for _ in 0..<20 { try await db.append([mix.event(ticket.next())]) }
    let r = try await runConcurrent(concurrency: concurrency, seconds: s.appendSeconds) {
      try await db.append([mix.event(ticket.next())])
    }
    try db.close()
    return (r, pragmas)
  }

  static func run(_ s: LogBenchSettings, progress: (String) -> Void) async throws -> LogBenchResults {
    let mix = EventMix()
    var res = LogBenchResults()

    // 1. Durable appends.
    for c in s.concurrencies {
      progress("appends: ours, \(c) appender(s)")
      let (ours, w) = try await oursAppends(s, mix: mix, concurrency: c)
      progress("appends: SQLite FULL, \(c) appender(s)")
      let (full, pragmasFull) = try await sqliteAppends(s, mix: mix, concurrency: c, sync: .full)
      progress("appends: SQLite NORMAL, \(c) appender(s)")
      let (normal, pragmasNormal) = try await sqliteAppends(s, mix: mix, concurrency: c, sync: .normal)
      res.sqlitePragmas = "\(pragmasFull) / \(pragmasNormal)"
      res.appends.append(
        .init(
          concurrency: c, ours: ours, oursCommits: w.commits, oursLargestBatch: w.largestBatchCalls,
          sqliteFull: full, sqliteNormal: normal))
    }

    // 2. Bulk load of the same events into both stores, in batches (one transaction each): ours as a restore
    //    or import does it (EventLog.openForBulkLoad: commits unflushed, one flush + fsync at the end, timed);
    //    SQLite with synchronous=FULL (the peer of earlier runs) and with synchronous=OFF plus one
    //    checkpoint and fsync at the end (the same durability contract as ours).
    let logDir = try freshDir(s.workDir, "replay-ours")
    let sqlDir = try freshDir(s.workDir, "replay-sqlite")
    let sqlOffDir = try freshDir(s.workDir, "bulk-sqlite-off")
    let log = try EventLog.openForBulkLoad(directory: logDir, options: quietOptions)
    defer { log.close() }
    let db = try SQLitePeer(path: sqlDir + "/events.sqlite", synchronous: .full)
    let dbOff = try SQLitePeer(path: sqlOffDir + "/events.sqlite", synchronous: .off)
    var oursNs: UInt64 = 0
    var sqlNs: UInt64 = 0
    var sqlOffNs: UInt64 = 0
    var oursCPU: UInt64 = 0
    var sqlCPU: UInt64 = 0
    var sqlOffCPU: UInt64 = 0
    var i = 0
    var nextReport = 0
    while i < s.replayEvents {
      let n = min(s.bulkBatch, s.replayEvents - i)
      let ts = wallNs()
      let batch = (i..<(i + n)).map { k in
        var e = mix.event(k)
        e.timestampNs = ts + UInt64(k)
        return e
      }
      let (t0, c0) = (nowNs(), cpuNs())
      try log.appendSync(batch)
      let (t1, c1) = (nowNs(), cpuNs())
      try db.appendSync(batch)
      let (t2, c2) = (nowNs(), cpuNs())
      try dbOff.appendSync(batch)
      let (t3, c3) = (nowNs(), cpuNs())
      oursNs += t1 - t0
      sqlNs += t2 - t1
      sqlOffNs += t3 - t2
      oursCPU += c1 - c0
      sqlCPU += c2 - c1
      sqlOffCPU += c3 - c2
      i += n
      if i >= nextReport {
        progress("bulk load: \(i)/\(s.replayEvents)")
        nextReport += max(s.replayEvents / 4, 1)
      }
    }
    do {
      let (t0, c0) = (nowNs(), cpuNs())
      try log.finishBulkLoad()
      let (t1, c1) = (nowNs(), cpuNs())
      try dbOff.flushToDisk()
      let (t2, c2) = (nowNs(), cpuNs())
      oursNs += t1 - t0
      oursCPU += c1 - c0
      sqlOffNs += t2 - t1
      sqlOffCPU += c2 - c1
      try dbOff.close()
      try? FileManager.default.removeItem(atPath: sqlOffDir)
    }
    res.bulkSQLiteOff = Double(s.replayEvents) / (Double(sqlOffNs) / 1e9)
    res.bulkSQLiteOffCPU = Double(s.replayEvents) / (Double(sqlOffCPU) / 1e9)
    res.bulkOurs = Double(s.replayEvents) / (Double(oursNs) / 1e9)
    res.bulkSQLite = Double(s.replayEvents) / (Double(sqlNs) / 1e9)
    res.bulkOursCPU = Double(s.replayEvents) / (Double(oursCPU) / 1e9)
    res.bulkSQLiteCPU = Double(s.replayEvents) / (Double(sqlCPU) / 1e9)

    // Stats of the replay log (no dictionary); the header scan also warms the page cache for all
    // replay passes alike.
    let st0 = try log.stats()
    _ = try db.sizeAfterCheckpoint()
    _ = try await db.pool.read { db in try Int.fetchOne(db, sql: "SELECT SUM(LENGTH(payload)) FROM events") }

    // 3. Replay: read only, then read + decode + apply; SQLite read + decode + apply.
    progress("replay: ours, read only")
    var t0 = nowNs()
    var c0 = cpuNs()
    var count = 0
    var bytes = 0
    try log.forEach(from: 1, chunkSize: 4096) { r in
      count += 1
      bytes &+= r.payload.count
    }
    res.readOurs = Double(count) / (Double(nowNs() - t0) / 1e9)
    res.readOursCPU = Double(count) / (Double(cpuNs() - c0) / 1e9)
    progress("replay: ours, decode + apply")
    t0 = nowNs()
    c0 = cpuNs()
    var state = GatewayState()
    try log.forEach(from: 1, chunkSize: 4096) { r in try state.apply(r) }
    res.replayOurs = Double(state.lastSeq) / (Double(nowNs() - t0) / 1e9)
    res.replayOursCPU = Double(state.lastSeq) / (Double(cpuNs() - c0) / 1e9)
    progress("replay: SQLite, decode + apply")
    t0 = nowNs()
    c0 = cpuNs()
    var peerState = GatewayState()
    try db.forEach { r in try peerState.apply(r) }
    res.replaySQLite = Double(peerState.lastSeq) / (Double(nowNs() - t0) / 1e9)
    res.replaySQLiteCPU = Double(peerState.lastSeq) / (Double(cpuNs() - c0) / 1e9)
    res.replayCheck =
      "\(state.sandboxes.count) sandboxes, \(state.providers.count) providers; SQLite replay "
      + (peerState.sandboxes.count == state.sandboxes.count && peerState.providers.count == state.providers.count
        ? "agrees" : "DISAGREES")

    // 4. Bytes per event, with a dictionary trained on the newest records and `dictEvents` further
    //    appends of the same mix (the dictionary-less numbers come from `st0` above).
    progress("sizes: dictionary training")
    let n0 = Double(st0.records)
    res.bytesNoDict = Double(st0.storedBytes) / n0
    res.bytesFileNoDict = Double(st0.usedBytes) / n0
    res.payloadRaw = Double(st0.uncompressedPayloadBytes) / n0
    res.payloadNoDict = Double(st0.storedPayloadBytes) / n0
    res.headerBytes = Double(st0.storedBytes - st0.storedPayloadBytes) / n0
    let dictID = try log.trainDictionary()
    var k = s.replayEvents
    let end = s.replayEvents + s.dictEvents
    while k < end {
      let n = min(s.bulkBatch, end - k)
      try log.appendSync((k..<(k + n)).map { mix.event($0) })
      k += n
    }
    let st1 = try log.stats()
    let nd = Double(st1.recordsPerDictionary[dictID] ?? 0)
    let headerAfter =
      Double(
        (st1.storedBytes - st1.storedPayloadBytes) - (st0.storedBytes - st0.storedPayloadBytes)) / nd
    res.payloadDict = Double(st1.storedPayloadBytesPerDictionary[dictID] ?? 0) / nd
    res.bytesDict = headerAfter + res.payloadDict
    res.bytesFileDict = Double(st1.usedBytes - st0.usedBytes) / nd
    res.diskPerDatabaseDict = st1.pagesPerDatabase.keys.sorted().map { name in
      let pages = (st1.pagesPerDatabase[name] ?? 0) - (st0.pagesPerDatabase[name] ?? 0)
      return (name, Double(pages * st1.pageSize) / nd)
    }
    let (rows, sqlBytes) = try db.sizeAfterCheckpoint()
    res.bytesSQLite = Double(sqlBytes) / Double(max(rows, 1))
    try db.close()
    _ = bytes
    return res
  }
}
