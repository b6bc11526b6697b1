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
  /// Newest seq that a checkpoint signed by another key claims to cover (its signature is not checked: that
  /// key is unknown here). A restored or recreated gateway signs with a key of its own, so records after a
  /// restore are covered by that key, not by the original one (0 = none).
  public var otherKeyCoversThrough: UInt64 = 0
  /// First problem: a checkpoint whose signature fails or whose covered record no longer has the signed
  /// hash (the record range 1…seq was rewritten). nil = none found.
  public var problem: String?
  /// Seq of the checkpoint record that failed.
  public var badCheckpointSeq: UInt64?

  /// Sound when nothing failed and at least one checkpoint by this key vouches for part of the log.
  public var ok: Bool { problem == nil && valid > 0 }

  /// The records after the newest checkpoint by this key that no signature covers yet, in a log whose head is
  /// `headSeq`; nil when there are none. The record right after the newest covered one is normally that
  /// checkpoint itself, so the tail starts one further.
  public func unsignedTail(headSeq: UInt64) -> ClosedRange<UInt64>? {
    headSeq > coveredThrough + 1 ? (coveredThrough + 2)...headSeq : nil
  }

  /// The line both `openshell-replay verify` and `openshell audit verify` print for the unsigned tail of a log
  /// a running gateway holds: expected (the gateway signs every N records and at shutdown), yet no signature
  /// vouches for these records until it does.
  public static func unsignedTailLine(_ tail: ClosedRange<UInt64>) -> String {
    "UNSIGNED TAIL: records \(tail.lowerBound)…\(tail.upperBound) (\(tail.count)) are not yet covered by a signed checkpoint "
      + "(the log is held by a running gateway, which signs them at its next checkpoint or at shutdown)"
  }
}

/// One `audit.checkpoint` record as the log holds it, with the hash its covered record has now.
public struct CheckpointEntry: Sendable, Equatable {
  /// Seq of the checkpoint record itself.
  public var seq: UInt64
  /// Seq of the record whose chain hash the checkpoint signs.
  public var coversSeq: UInt64
  /// The signed chain hash (32 bytes).
  public var chainHash: [UInt8]
  /// Ed25519 signature (64 bytes) over ``CheckpointSignature/message(seq:chainHash:)``.
  public var signature: [UInt8]
  /// Hex SHA-256 of the raw 32-byte public key that signed.
  public var keySHA256: String
  /// Chain hash of record `coversSeq` in the log now; nil when the log holds no such record before `seq`.
  public var coveredHashNow: [UInt8]?

  /// An entry with every field given (as read from the log).
  public init(seq: UInt64, coversSeq: UInt64, chainHash: [UInt8], signature: [UInt8], keySHA256: String, coveredHashNow: [UInt8]?) {
    self.seq = seq
    self.coversSeq = coversSeq
    self.chainHash = chainHash
    self.signature = signature
    self.keySHA256 = keySHA256
    self.coveredHashNow = coveredHashNow
  }
}

/// `openshell-replay verify --public-key` and `openshell audit verify`: every `audit.checkpoint` record is
/// checked against the key and against the chain hash of the record it covers (threat model:
/// ``CheckpointSignature``).
public enum CheckpointVerifier {
  /// - Parameters:
  ///   - log: an open log (verify its chain first: this check trusts the stored hashes only as far as
  ///     the signatures vouch for them).
  ///   - key: the gateway's checkpoint public key, obtained out of band.
  /// - Throws: `EventLogError` when records cannot be read at all, `ProjectionError` for a checkpoint
  ///   record that does not decode.
  public static func verify(_ log: EventLog, key: Curve25519.Signing.PublicKey) throws -> CheckpointReport {
    check(try collect(log), key: key)
  }

  /// Every checkpoint record of the log, in seq order (a header filter: other records are not decompressed).
  public static func collect(_ log: EventLog) throws -> [CheckpointEntry] {
    var entries: [CheckpointEntry] = []
    try log.forEach(from: 1, through: log.headSeq, filter: EventFilter(types: ["audit.checkpoint"])) { record in
      guard case .auditCheckpoint(let c)? = try GatewayEvent.decode(record).kind else {
        throw ProjectionError(seq: record.seq, message: "an audit.checkpoint record holds another event")
      }
      let covered = c.coversSeq < record.seq ? try log.record(at: c.coversSeq)?.hash : nil
      entries.append(
        CheckpointEntry(
          seq: record.seq, coversSeq: c.coversSeq, chainHash: [UInt8](c.chainHash), signature: [UInt8](c.signature),
          keySHA256: c.keySha256, coveredHashNow: covered))
    }
    return entries
  }

  /// Checks entries against `key`; stops at the first failure.
  public static func check(_ entries: [CheckpointEntry], key: Curve25519.Signing.PublicKey) -> CheckpointReport {
    var report = CheckpointReport()
    let keyID = CheckpointSignature.keyID(key)
    for c in entries {
      guard c.keySHA256 == keyID else {
        report.otherKey += 1
        report.otherKeyCoversThrough = max(report.otherKeyCoversThrough, c.coversSeq)
        continue
      }
      let message = CheckpointSignature.message(seq: c.coversSeq, chainHash: c.chainHash)
      guard key.isValidSignature(c.signature, for: message) else {
        return fail(report, at: c.seq, "checkpoint at seq \(c.seq) has an invalid signature (forged or altered)")
      }
      guard let now = c.coveredHashNow else {
        return fail(report, at: c.seq, "checkpoint at seq \(c.seq) vouches for seq \(c.coversSeq), which the log does not hold before it")
      }
      guard now == c.chainHash else {
        return fail(
          report, at: c.seq,
          "records 1…\(c.coversSeq) were rewritten: the chain hash at seq \(c.coversSeq) is not the one signed by the checkpoint at seq \(c.seq)")
      }
      report.valid += 1
      report.coveredThrough = max(report.coveredThrough, c.coversSeq)
    }
    return report
  }

  private static func fail(_ report: CheckpointReport, at seq: UInt64, _ problem: String) -> CheckpointReport {
    var r = report
    r.problem = problem
    r.badCheckpointSeq = seq
    return r
  }
}
