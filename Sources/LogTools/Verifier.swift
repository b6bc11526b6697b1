import EventLog
import Foundation
import Projections

/// Result of `LogVerifier.verify`.
public struct VerificationResult: Sendable, Codable {
  /// Number of records checked.
  public var records: UInt64
  /// Seq of the newest record.
  public var headSeq: UInt64
  /// Chain hash of the newest record, hex.
  public var headHash: String
  /// Newest snapshot seq that was compared (0 = no snapshot).
  public var snapshotSeq: UInt64
  /// Whether the rebuilt state encodes byte-identically to the newest snapshot; nil when none was compared.
  public var snapshotMatches: Bool?
  /// First problem found: seq and reason. nil = the log is sound.
  public var firstBadSeq: UInt64?
  /// Reason for `firstBadSeq`, or a damaged snapshot; nil = no problem.
  public var problem: String?
  /// Signed-checkpoint check, when a public key was given (`verify --public-key`).
  public var checkpoints: CheckpointReport?
  /// `[first, last]` seq of the records after the newest checkpoint of a log a running gateway holds: accepted,
  /// yet not vouched for by a signature (``CheckpointReport/unsignedTailLine(_:)``); nil otherwise.
  public var unsignedTail: [UInt64]?

  /// True when the records are sound and no compared snapshot differs.
  public var ok: Bool { firstBadSeq == nil && problem == nil && snapshotMatches != false }
}

/// `openshell-replay verify`: checksums, hash chain, decoding of every payload, and the rebuilt
/// state compared with the newest snapshot.
public enum LogVerifier {
  /// - Throws: only when the log cannot be opened or read at all; problems in the data are
  ///   reported in the result, naming the first bad seq.
  public static func verify(_ log: EventLog, progress: ((UInt64, UInt64) -> Void)? = nil) throws -> VerificationResult {
    let report = try log.verify(progress: progress)
    var result = VerificationResult(
      records: report.records, headSeq: report.headSeq, headHash: hexString(report.headHash),
      snapshotSeq: 0, snapshotMatches: nil, firstBadSeq: nil, problem: nil)
    if let bad = report.firstBad {
      result.firstBadSeq = bad.seq
      result.problem = bad.reason
      return result
    }
    // Decode and apply every record; compare with the newest snapshot at its seq.
    let snapshot: (seq: UInt64, bytes: [UInt8])?
    do {
      snapshot = try log.latestSnapshot(name: SnapshotCodec.projectionName)
    } catch let e as EventLogError where e.code == .corrupt {
      // The records are sound; only the snapshot is damaged (the gateway falls back to an older one).
      result.snapshotSeq = e.seq ?? 0
      result.snapshotMatches = false
      result.problem = "\(e.message); `openshell-replay rebuild` writes a fresh snapshot"
      return result
    }
    var state = GatewayState()
    do {
      if let snapshot, snapshot.seq <= log.headSeq {
        try StateLoader.replay(log, into: &state, through: .seq(snapshot.seq))
        result.snapshotSeq = snapshot.seq
        result.snapshotMatches = SnapshotCodec.encode(state, as: SnapshotCodec.format(of: snapshot.bytes)) == snapshot.bytes
        if result.snapshotMatches == false {
          result.problem = "snapshot at seq \(snapshot.seq) differs from the state rebuilt from the log; `openshell-replay rebuild` writes a fresh snapshot"
          result.firstBadSeq = nil
        }
      }
      try StateLoader.replay(log, into: &state, through: .head)
    } catch let error as ProjectionError {
      result.firstBadSeq = error.seq
      result.problem = error.message
    }
    return result
  }
}

/// Lowercase hex of bytes.
public func hexString<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
  bytes.map { String(format: "%02x", $0) }.joined()
}
