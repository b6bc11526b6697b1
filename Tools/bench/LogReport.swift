import Foundation

/// Renders the `log` benchmark tables.
enum LogReport {
  static func f(_ v: Double, _ digits: Int = 0) -> String { String(format: "%.\(digits)f", v) }
  static func ratio(_ a: Double, _ b: Double) -> String { b > 0 ? String(format: "%.2fx", a / b) : "-" }

  static func table(_ head: [String], _ rows: [[String]]) -> String {
    var w = head.map(\.count)
    for r in rows { for (i, c) in r.enumerated() { w[i] = max(w[i], c.count) } }
    func line(_ cells: [String]) -> String {
      cells.enumerated().map { i, c in
        i == 0
          ? c.padding(toLength: w[i], withPad: " ", startingAt: 0)
          : String(repeating: " ", count: w[i] - c.count) + c
      }.joined(separator: "  ")
    }
    let sep = w.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
    return ([line(head), sep] + rows.map(line)).joined(separator: "\n")
  }

  static func render(_ r: LogBenchResults, _ s: LogBenchSettings) -> String {
    var out = ""
    out += "\n== Durable appends (events/s; latency p50/p99 ms per append call) ==\n"
    out += "SQLite pragmas: \(r.sqlitePragmas)\n"
    out += table(
      [
        "appenders", "ours ev/s", "p50", "p99", "calls/commit", "SQLite FULL ev/s", "p50", "p99", "ours/FULL",
        "SQLite NORMAL ev/s", "p50", "p99", "ours/NORMAL",
      ],
      r.appends.map { a in
        [
          "\(a.concurrency)", f(a.ours.perSecond), f(a.ours.percentile(50), 2), f(a.ours.percentile(99), 2),
          f(Double(a.ours.ops) / Double(max(a.oursCommits, 1)), 1),
          f(a.sqliteFull.perSecond), f(a.sqliteFull.percentile(50), 2), f(a.sqliteFull.percentile(99), 2),
          ratio(a.ours.perSecond, a.sqliteFull.perSecond),
          f(a.sqliteNormal.perSecond), f(a.sqliteNormal.percentile(50), 2), f(a.sqliteNormal.percentile(99), 2),
          ratio(a.ours.perSecond, a.sqliteNormal.perSecond),
        ]
      })
    out += "\n(ours: fsync'd LMDB commit before append returns; SQLite FULL: WAL fsync per commit; "
    out += "SQLite NORMAL: WAL not fsync'd per commit — not durable against power loss)\n"

    out += "\n== Bulk load and replay (\(s.replayEvents) events, events/s) ==\n"
    out += table(
      ["workload", "ours", "SQLite", "ours/SQLite"],
      [
        ["bulk load, \(s.bulkBatch)-event transactions (ours: bulk-load mode; SQLite FULL)", f(r.bulkOurs), f(r.bulkSQLite), ratio(r.bulkOurs, r.bulkSQLite)],
        ["bulk load, the same (SQLite synchronous=OFF + one checkpoint and fsync)", f(r.bulkOurs), f(r.bulkSQLiteOff), ratio(r.bulkOurs, r.bulkSQLiteOff)],
        ["replay: read only (decompress, checksum, chain hash)", f(r.readOurs), "-", "-"],
        ["replay: read + decode + GatewayState.apply", f(r.replayOurs), f(r.replaySQLite), ratio(r.replayOurs, r.replaySQLite)],
        ["bulk load, per CPU-second (all threads)", f(r.bulkOursCPU), f(r.bulkSQLiteCPU), ratio(r.bulkOursCPU, r.bulkSQLiteCPU)],
        ["bulk load, per CPU-second (SQLite OFF)", f(r.bulkOursCPU), f(r.bulkSQLiteOffCPU), ratio(r.bulkOursCPU, r.bulkSQLiteOffCPU)],
        ["replay: read only, per CPU-second", f(r.readOursCPU), "-", "-"],
        ["replay: read + decode + apply, per CPU-second", f(r.replayOursCPU), f(r.replaySQLiteCPU), ratio(r.replayOursCPU, r.replaySQLiteCPU)],
      ])
    out += "\nfinal state: \(r.replayCheck)\n"

    out += "\n== Bytes per event ==\n"
    out += table(
      ["store", "record bytes", "stored body bytes", "on disk (B-tree pages)"],
      [
        ["uncompressed payload (mix mean)", "-", f(r.payloadRaw, 1), "-"],
        ["ours, zstd -1, no dictionary", f(r.bytesNoDict, 1), f(r.payloadNoDict, 1), f(r.bytesFileNoDict, 1)],
        ["ours, zstd 4, trained dictionary", f(r.bytesDict, 1), f(r.payloadDict, 1), f(r.bytesFileDict, 1)],
        ["SQLite (uncompressed payload, checkpointed file)", "-", "-", f(r.bytesSQLite, 1)],
      ])
    out += "\n(record = framing \(f(r.headerBytes, 1)) B (format v3: version, timestamp, dictionary id and storage, "
    out += "length, CRC-32C) plus the stored body (header strings + payload: one zstd block without frame metadata, "
    out += "or a frame); "
    out += "dictionary rows: \(s.dictEvents) events appended after training on the newest 10,000; "
    out += "on disk ours: LMDB used pages / records, chain checkpoints included)\n"
    out += "ratios on disk: ours no-dict/SQLite \(ratio(r.bytesFileNoDict, r.bytesSQLite)), "
    out += "ours dict/SQLite \(ratio(r.bytesFileDict, r.bytesSQLite))\n"
    let parts = r.diskPerDatabaseDict.filter { $0.bytes != 0 }.map { "\($0.name) \(f($0.bytes, 1)) B" }
    out += "on disk per event, dictionary rows, by LMDB database (pages added / events): "
    out += parts.joined(separator: ", ")
    if let ev = r.diskPerDatabaseDict.first(where: { $0.name == "events" }) {
      out += " (events = record \(f(r.bytesDict, 1)) B + LMDB node header, 8-byte key, slot and page slack "
      out += "\(f(ev.bytes - r.bytesDict, 1)) B)"
    }
    out += "\n"
    return out
  }
}
