import EventLog
import Foundation
import LogTools
import Logging
import Projections

/// The gateway refused to start; `description` is one line naming the file, the seq or page and the remedy.
public struct GatewayStartupError: Error, CustomStringConvertible, Sendable {
  /// The one-line refusal, as the gateway prints it before exiting.
  public let description: String
}

/// Opening the event log a gateway serves (issue 17: a gateway never serves a log it cannot trust).
///
/// `EventLog.open` walks `data.mdb`'s pages with bounds checks before liblmdb maps it (``LMDBFileCheck``: an
/// empty or truncated file is refused, never started as a new gateway) and, in the same walk, every record's
/// checksum (``EventLog/Options/checkRecordsAtOpen``; issue 14: one read of the file); ``GatewayStore`` then
/// checks the head record and its chain link, the newest usable snapshot against the record it
/// covers (falling back to an older one or to a full replay, with a warning) and the chain of every replayed
/// record (``StateLoader/load(_:progress:)``). Any failure becomes one ``GatewayStartupError``.
enum LogStartup {
  /// Opens `DATA/log` and builds the store. Throws ``GatewayStartupError`` for a damaged or missing log,
  /// and other `EventLogError`s (e.g. `.locked`) unchanged.
  static func open(dataDirectory: String, options: EventLog.Options, metrics: GatewayMetrics, logger: Logger) throws -> (EventLog, GatewayStore) {
    let logDir = dataDirectory + "/log"
    let file = logDir + "/data.mdb"
    let fm = FileManager.default
    if !fm.fileExists(atPath: file), fm.fileExists(atPath: dataDirectory + "/pki/ca.crt") {
      throw GatewayStartupError(
        description:
          "refusing to start: the gateway in \(dataDirectory) was initialised (pki/ca.crt exists) but its event log \(file) is missing; a lost log never starts as a new gateway — restore it with `openshell-replay restore ARCHIVE --gateway NAME`, or start a new gateway with `openshell gateway start --recreate`"
      )
    }
    let log: EventLog
    let started = ContinuousClock.now
    // Every record's checksum is checked in the walk of data.mdb that precedes liblmdb's map (one read of the
    // file; issue 14), so the store's load does not read every record again.
    var options = options
    options.checkRecordsAtOpen = true
    // The walk reads the snapshots first and the newest one decodes on its own thread while the walk checks
    // the records (issue 14).
    let ahead = SnapshotDecodeAhead()
    options.snapshotPrefetch = ahead.prefetch
    do {
      log = try EventLog.open(directory: logDir, options: options)
    } catch let e as EventLogError where e.code == .corrupt {
      throw damaged(file: file, logDir: logDir, e.seq, e.message)
    }
    do {
      let opened = ContinuousClock.now
      let store = try GatewayStore(log: log, metrics: metrics, decodedAhead: ahead)
      let loaded = ContinuousClock.now
      if let r = log.fileReport {
        let records = log.recordsCheckedAtOpen.map { ", records 1...\($0) checked" } ?? ""
        logger.info(
          "event log checked in \(milliseconds(opened - started)) ms: \(r.treePages) pages in use, \(r.freePages) free, head seq \(log.headSeq)\(records)")
      }
      // Not for a log this start created (no file to walk: nothing was there to close).
      if let c = log.commitRecovery, !c.cleanClose, log.fileReport != nil {
        let back = c.recovered.map { ", put back the cut-off commit(s) \($0.lowerBound)...\($0.upperBound)" } ?? ""
        logger.info(
          "event log was not closed cleanly: \(c.pagesScanned) pages scanned for commits whose meta page a crash kept from the disk in \(c.nanoseconds / 1_000_000) ms\(back)"
        )
      }
      let from = store.loadedSnapshotSeq == 0 ? "no snapshot" : "snapshot at seq \(store.loadedSnapshotSeq)"
      logger.info(
        "state at seq \(log.headSeq) loaded in \(milliseconds(loaded - opened)) ms (\(from), \(log.headSeq - store.loadedSnapshotSeq) records replayed)")
      return (log, store)
    } catch let e as EventLogError where e.code == .corrupt {
      log.close()
      throw damaged(file: file, logDir: logDir, e.seq, e.message)
    } catch let e as ProjectionError {
      log.close()
      throw damaged(file: file, logDir: logDir, e.seq, e.message)
    } catch {
      log.close()
      throw error
    }
  }

  static func milliseconds(_ d: Duration) -> String {
    String(format: "%.1f", Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15)
  }

  static func damaged(file: String, logDir: String, _ seq: UInt64?, _ message: String) -> GatewayStartupError {
    let at = seq.map { " at seq \($0)" } ?? ""
    let what = message.hasPrefix(file) ? message : "\(file)\(at): \(message)"
    return GatewayStartupError(
      description:
        "refusing to serve a damaged event log: \(what); nothing was served or changed — run `openshell-replay verify \(logDir)` for a full report, then `openshell-replay restore ARCHIVE --gateway NAME` from a backup"
    )
  }
}
