import Foundation
import LogTools
import Projections
import Testing

@testable import EventLog

/// A snapshot records the chain hash of the record at its seq, and opening checks it (issue 16; etcd binds
/// its snapshots into the WAL the same way).
///
/// Decision: a snapshot whose hash disagrees with the log is **not used** and opening **falls back** (to an
/// older snapshot, else a replay from seq 1) with a warning, rather than refusing to start. The records are
/// the source of truth and are verified at open on their own (checksums, the chain from the snapshot to
/// the head); the snapshot is only a shortcut, so a foreign or stale one costs a longer replay, never a
/// wrong state and never an outage.
@Suite struct SnapshotBindingTests {
  static func temporaryLog() throws -> EventLog {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("snapbind-\(UUID().uuidString)").path
    return try EventLog.open(directory: dir)
  }

  /// Appends `count` workspace events named `<prefix>-<i>`; returns the projected state.
  static func fill(_ log: EventLog, prefix: String, count: Int) throws -> GatewayState {
    let events = (0..<count).map { i in
      GatewayEvent(
        .workspaceCreated(
          .with {
            $0.id = "\(prefix)-id-\(i)"; $0.name = "\(prefix)-\(i)"
          })
      )
      .newEvent(actor: "test", requestID: "")
    }
    _ = try log.appendSync(events)
    return try StateLoader.replay(log)
  }

  /// The stored snapshot value (header, chain hash, compressed bytes) of `name` at `seq`, as it is in LMDB.
  static func rawSnapshot(_ log: EventLog, seq: UInt64) throws -> [UInt8] {
    try #require(
      try log.shared.env.withRead { txn in
        try txn.get(log.shared.env.dbs.snapshots, SnapshotFormat.key(SnapshotCodec.projectionName, seq))
      })
  }

  @Test("a snapshot bound to another history is refused at open: full replay and a warning naming it")
  func foreignSnapshotIsRejected() throws {
    let a = try Self.temporaryLog()
    defer { a.close() }
    let stateA = try Self.fill(a, prefix: "a", count: 10)
    try a.saveSnapshot(name: SnapshotCodec.projectionName, seq: 10, bytes: SnapshotCodec.encode(stateA))
    #expect(try a.snapshot(name: SnapshotCodec.projectionName, seq: 10)?.chainHash == (try a.record(at: 10)?.hash))
    let loadedA = try StateLoader.load(a)
    #expect(loadedA.snapshotSeq == 10 && loadedA.warnings.isEmpty && loadedA.state == stateA)

    // Log B: the same seqs, another history. Graft A's snapshot (checksum intact) in, byte for byte.
    let b = try Self.temporaryLog()
    defer { b.close() }
    let stateB = try Self.fill(b, prefix: "b", count: 10)
    let value = try Self.rawSnapshot(a, seq: 10)
    try b.performWrite { txn, _ in
      try txn.put(b.shared.env.dbs.snapshots, SnapshotFormat.key(SnapshotCodec.projectionName, 10), value)
    }
    #expect(try b.snapshot(name: SnapshotCodec.projectionName, seq: 10) != nil, "the grafted snapshot passes its own checksum")

    let loaded = try StateLoader.load(b)
    #expect(loaded.snapshotSeq == 0, "the foreign snapshot was not used")
    #expect(loaded.state == stateB, "B's own records, not A's snapshot")
    #expect(loaded.state.workspaces["a-0"] == nil && loaded.state.workspaces["b-0"] != nil)
    let warning = loaded.warnings.joined()
    #expect(warning.contains("snapshot at seq 10 does not match the chain hash of record 10"), "\(loaded.warnings)")
    #expect(warning.contains("rebuilt from every record from seq 1"), "\(loaded.warnings)")
  }

  @Test("an old JSON snapshot is still used at open")
  func jsonSnapshotIsUsed() throws {
    let log = try Self.temporaryLog()
    defer { log.close() }
    let state = try Self.fill(log, prefix: "j", count: 5)
    try log.saveSnapshot(name: SnapshotCodec.projectionName, seq: 5, bytes: SnapshotCodec.encode(state, as: .json))
    let loaded = try StateLoader.load(log)
    #expect(loaded.snapshotSeq == 5 && loaded.warnings.isEmpty)
    #expect(loaded.state == state)
    #expect(try LogVerifier.verify(log).snapshotMatches == true, "the verifier re-encodes in the snapshot's own format")
  }
}
