import Foundation

/// The issue-14 targets this benchmark can measure honestly, as one table: measure, ours, peer, ratio,
/// target, met. Printed last by `openshell-bench log`; `scripts/bench.sh` shows only this table.
/// Targets (issue 14, release build, this 2-core machine, ratios from one run): bytes per event ≤ 80 B and
/// ≤ 0.5× SQLite; 1 durable appender ≥ 1.0× SQLite FULL; 64 durable appenders ≥ 100k ev/s and ≥ 10× SQLite
/// FULL; replay decode + apply ≥ 1M ev/s and ≥ 3× SQLite; bulk load ≥ 2× SQLite.
enum LogTargets {
  static let begin = "== Issue 14 targets (log) =="
  static let end = "== end of targets =="

  struct Row {
    var measure: String
    var ours: Double
    var peer: Double?
    var unit: String
    var target: String
    var met: Bool
  }

  static func rows(_ r: LogBenchResults) -> [Row] {
    var out: [Row] = []
    let bytesRatio = r.bytesSQLite > 0 ? r.bytesFileDict / r.bytesSQLite : .infinity
    out.append(
      Row(
        measure: "bytes/event on disk, trained dictionary (peer: SQLite file)", ours: r.bytesFileDict,
        peer: r.bytesSQLite, unit: "B", target: "≤ 80 B and ≤ 0.50×",
        met: r.bytesFileDict <= 80 && bytesRatio <= 0.5))
    for a in r.appends where a.concurrency == 1 || a.concurrency == 64 {
      let ratio = a.ours.perSecond / max(a.sqliteFull.perSecond, 1e-9)
      if a.concurrency == 1 {
        out.append(
          Row(
            measure: "durable appends/s, 1 appender (peer: SQLite FULL)", ours: a.ours.perSecond,
            peer: a.sqliteFull.perSecond, unit: "ev/s", target: "≥ 1.00×", met: ratio >= 1.0))
      } else {
        out.append(
          Row(
            measure: "durable appends/s, 64 appenders (peer: SQLite FULL)", ours: a.ours.perSecond,
            peer: a.sqliteFull.perSecond, unit: "ev/s", target: "≥ 100k and ≥ 10.00×",
            met: a.ours.perSecond >= 100_000 && ratio >= 10))
      }
    }
    out.append(
      Row(
        measure: "replay decode + apply, one core (peer: SQLite)", ours: r.replayOurs, peer: r.replaySQLite,
        unit: "ev/s", target: "≥ 1M and ≥ 3.00×",
        met: r.replayOurs >= 1_000_000 && r.replayOurs >= 3 * r.replaySQLite))
    out.append(
      Row(
        measure: "bulk load (peer: SQLite FULL)", ours: r.bulkOurs, peer: r.bulkSQLite, unit: "ev/s",
        target: "≥ 2.00×", met: r.bulkOurs >= 2 * r.bulkSQLite))
    return out
  }

  static func render(_ r: LogBenchResults) -> String {
    let table = LogReport.table(
      ["measure", "ours", "peer", "ratio", "target", "met"],
      rows(r).map { row in
        let digits = row.unit == "B" ? 1 : 0
        return [
          row.measure, LogReport.f(row.ours, digits) + " " + row.unit,
          row.peer.map { LogReport.f($0, digits) + " " + row.unit } ?? "-",
          row.peer.map { LogReport.ratio(row.ours, $0) } ?? "-", row.target, row.met ? "yes" : "NO",
        ]
      })
    return "\n\(begin)\n\(table)\n\(end)\n"
  }
}
