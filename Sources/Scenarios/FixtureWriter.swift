import EventLog
import Foundation
import Projections

/// Writes scenarios into real logs and checks fixture directories.
public enum FixtureWriter {
  /// Appends every batch of `scenario` into a new log at `logDirectory` (one atomic append per
  /// batch), writes a snapshot at the head, and returns the projected state.
  /// - Throws: `EventLogError`, `ProjectionError`.
  public static func write(_ scenario: Scenario, logDirectory: String) throws -> GatewayState {
    let log = try EventLog.open(directory: logDirectory)
    defer { log.close() }
    for batch in scenario.batches { try log.appendSync(batch) }
    var state = GatewayState()
    try log.forEach(from: 1) { try state.apply($0) }
    try log.saveSnapshot(name: SnapshotCodec.projectionName, seq: state.lastSeq, bytes: SnapshotCodec.encode(state))
    return state
  }

  /// Replays the projections of `scenario` in memory (no log), for comparisons.
  public static func project(_ scenario: Scenario) throws -> GatewayState {
    var state = GatewayState()
    var seq: UInt64 = 0
    for event in scenario.events {
      seq += 1
      let decoded = try GatewayEvent(serializedBytes: event.payload)
      state.apply(decoded, seq: seq, timestampNs: event.timestampNs ?? 0)
      if !event.requestID.isEmpty, state.requests[event.requestID] == nil { state.requests[event.requestID] = seq }
      state.lastSeq = seq
    }
    return state
  }
}
