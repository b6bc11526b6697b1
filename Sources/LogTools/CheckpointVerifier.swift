import Crypto
import EventLog
import Foundation
import Projections

/// Outcome of checking a log's signed checkpoints against one public key.
public struct CheckpointReport: Sendable, Codable, Equatable {
  /// Checkpoints whose signature and covered record both check out.
  public var valid: Int = 0
  /// Newest seq vouched for by a valid checkpoint (0 = none).
  public var coveredThrough: UInt64 = 0
  /// Checkpoints signed by another key (ignored, counted).
  public var otherKey: Int = 0
  /// First problem: a checkpoint whose signature fails or whose covered record no longer has the signed
  /// hash (the record range 1…seq was rewritten). nil = none found.
  public var problem: String?
  /// Seq of the checkpoint record that failed.
  public var badCheckpointSeq: UInt64?

  /// Sound when nothing failed and at least one checkpoint by this key vouches for part of the log.
  public var ok: Bool { problem == nil && valid > 0 }
}

/// `openshell-replay verify --public-key`: every `audit.checkpoint` record is checked against the key
/// and against the chain hash of the record it covers (threat model: ``CheckpointSignature``).
public enum CheckpointVerifier {
  /// - Parameters:
  ///   - log: an open log (verify its chain first: this check trusts the stored hashes only as far as
  ///     the signatures vouch for them).
  ///   - key: the gateway's checkpoint public key, obtained out of band.
  /// - Throws: `EventLogError` when records cannot be read at all.
  public static func verify(_ log: EventLog, key: Curve25519.Signing.PublicKey) throws -> CheckpointReport {
    var report = CheckpointReport()
    let keyID = CheckpointSignature.keyID(key)
    // Read only the checkpoint records (a header filter: other records are not decompressed).
    try log.forEach(from: 1, through: log.headSeq, filter: EventFilter(types: ["audit.checkpoint"])) { record in
      guard report.problem == nil else { return }
      guard case .auditCheckpoint(let c)? = try? GatewayEvent.decode(record).kind else {
        return fail(&report, at: record.seq, "checkpoint record at seq \(record.seq) cannot be decoded")
      }
      guard c.keySha256 == keyID else {
        report.otherKey += 1
        return
      }
      let message = CheckpointSignature.message(seq: c.coversSeq, chainHash: [UInt8](c.chainHash))
      guard key.isValidSignature(c.signature, for: message) else {
        return fail(&report, at: record.seq, "checkpoint at seq \(record.seq) has an invalid signature (forged or altered)")
      }
      guard c.coversSeq < record.seq, let covered = try log.record(at: c.coversSeq) else {
        return fail(&report, at: record.seq, "checkpoint at seq \(record.seq) vouches for seq \(c.coversSeq), which the log does not hold before it")
      }
      guard covered.hash == [UInt8](c.chainHash) else {
        return fail(&report, at: record.seq,
          "records 1…\(c.coversSeq) were rewritten: the chain hash at seq \(c.coversSeq) is not the one signed by the checkpoint at seq \(record.seq)")
      }
      report.valid += 1
      report.coveredThrough = max(report.coveredThrough, c.coversSeq)
    }
    return report
  }

  private static func fail(_ report: inout CheckpointReport, at seq: UInt64, _ problem: String) {
    report.problem = problem
    report.badCheckpointSeq = seq
  }
}
