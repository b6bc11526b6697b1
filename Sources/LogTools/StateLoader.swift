import EventLog
import Foundation
import Projections

/// Where to stop a replay.
public enum ReplayPoint: Sendable, Equatable {
  /// Through the newest record.
  case head
  /// Through this seq (inclusive).
  case seq(UInt64)
  /// Through the last record whose timestamp is ≤ this instant (ns since the Unix epoch, UTC).
  case time(UInt64)
}

/// Rebuilds `GatewayState` from a log: from scratch, or from the newest snapshot plus the tail.
public enum StateLoader {
  /// Opening path: newest snapshot (if any) plus the records after it.
  /// - Returns: the state and the seq the snapshot covered (0 if none was used).
  /// - Throws: `EventLogError` from the log, `ProjectionError` for undecodable records; a snapshot
  ///   that does not decode is ignored (the full replay is the source of truth) and reported in `warnings`.
  public static func load(_ log: EventLog, progress: ((UInt64, UInt64) -> Void)? = nil) throws -> (state: GatewayState, snapshotSeq: UInt64, warnings: [String]) {
    var state = GatewayState()
    var warnings: [String] = []
    var snapshotSeq: UInt64 = 0
    if let snap = try log.latestSnapshot(name: SnapshotCodec.projectionName) {
      do {
        state = try SnapshotCodec.decode(snap.bytes)
        snapshotSeq = snap.seq
      } catch {
        warnings.append("snapshot at seq \(snap.seq) does not decode (\(error)); replaying from seq 1")
        state = GatewayState()
      }
    }
    try replay(log, into: &state, through: .head, progress: progress)
    return (state, snapshotSeq, warnings)
  }

  /// Replays from scratch up to `point`.
  public static func replay(_ log: EventLog, through point: ReplayPoint = .head, progress: ((UInt64, UInt64) -> Void)? = nil) throws -> GatewayState {
    var state = GatewayState()
    try replay(log, into: &state, through: point, progress: progress)
    return state
  }

  /// Applies records after `state.lastSeq` up to `point`, reading the log in chunks.
  public static func replay(_ log: EventLog, into state: inout GatewayState, through point: ReplayPoint, progress: ((UInt64, UInt64) -> Void)? = nil) throws {
    let head = log.headSeq
    var limit: UInt64? = nil
    if case .seq(let s) = point { limit = min(s, head) }
    if let limit, limit <= state.lastSeq { return }
    var stop = false
    var applyError: Error?
    try log.forEach(from: state.lastSeq + 1, through: limit ?? head) { record in
      if stop { return }
      if case .time(let t) = point, record.timestampNs > t {
        stop = true
        return
      }
      do {
        try state.apply(record)
      } catch {
        applyError = error
        stop = true
        return
      }
      if let progress, record.seq % 4096 == 0 { progress(record.seq, head) }
    }
    if let applyError { throw applyError }
    progress?(state.lastSeq, head)
  }
}
