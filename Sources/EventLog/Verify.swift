import CLMDB

/// The first problem `verify()` found.
public struct VerifyFailure: Sendable, Hashable, CustomStringConvertible {
  /// The first bad (or missing) seq.
  public let seq: UInt64
  /// What is wrong there, one line (e.g. "checksum mismatch", "hash chain broken").
  public let reason: String
  /// `seq N: <reason>`, as `openshell-replay verify` prints it.
  public var description: String { "seq \(seq): \(reason)" }
}

/// Result of ``EventLog/verify(progress:)``.
public struct VerifyReport: Sendable, Hashable {
  /// Records checked and found good (all records when `firstBad == nil`).
  public var records: UInt64
  /// Head seq and hash recorded in `meta`.
  public var headSeq: UInt64
  /// Chain hash recorded in `meta` for the head (32 bytes).
  public var headHash: [UInt8]
  /// Seq and chain hash of the last good record walked.
  public var lastSeq: UInt64
  /// Chain hash of that record (32 bytes).
  public var lastHash: [UInt8]
  /// The first problem, or nil if the whole log verified.
  public var firstBad: VerifyFailure?
  /// True when every record verified (no ``firstBad``).
  public var isOK: Bool { firstBad == nil }
}

extension EventLog {
  /// Verifies the whole log in chunks (each one short read transaction of at most 1,024 records): per
  /// record the CRC-32C, header bounds, seq = key, gapless seqs from 1, successful decompression (with the
  /// referenced dictionary) to the recorded length; the chain hash recomputed from seq 1 and compared with
  /// every v1 record's previous-hash link, every chain checkpoint (``ChainCheckpoints``; a damaged one is
  /// named by its seq) and finally `meta` head seq and hash. Stops at and reports the first bad seq with a
  /// reason (`firstBad`). A record altered with a recomputed checksum is found where the chain next meets a
  /// checkpoint, a v1 link or the head: v2 and v3 records carry no link of their own, so the reason names the
  /// range (at most one checkpoint interval) and `seq` is its first record.
  ///
  /// With `checksumsOnly` (the quick pass a gateway runs at start-up) records are parsed and their checksums
  /// checked but not decompressed, so neither the chain nor `meta` head hash is checked (`lastHash` stays
  /// zero); gapless seqs, the head seq and every chain checkpoint's own checksum still are.
  ///
  /// `progress(done, total)` is called after each chunk (`total` = head seq in `meta`).
  /// Throws only when the log cannot be read at all (`.closed`, LMDB environment errors).
  public func verify(checksumsOnly: Bool = false, progress: ((UInt64, UInt64) -> Void)? = nil) throws -> VerifyReport {
    try checkOpen()
    let meta = try shared.readHead()
    var report = VerifyReport(
      records: 0, headSeq: meta.headSeq, headHash: meta.headHash, lastSeq: 0,
      lastHash: RecordFormat.zeroHash, firstBad: nil)
    let chunk = 1024
    var expected: UInt64 = 1
    var anchor: UInt64 = 0  // newest seq whose chain hash was confirmed (checkpoint or v1 link)
    var done = false
    while !done && report.firstBad == nil {
      do {
        try shared.env.withRead { txn in
          let c = try txn.cursor(shared.env.dbs.events)
          defer { c.close() }
          let checkpoints = try CheckpointWalk(txn, shared.env.dbs, from: expected)
          defer { checkpoints.close() }
          let ctx = RecordDecoder(shared: shared)
          var op = MDB_SET_RANGE
          var key: [UInt8]? = seqKey(expected)
          for _ in 0..<chunk {
            let more: Bool? = try c.get(op, key: key) { k, v in
              guard let seq = decodeBE64(k) else {
                report.firstBad = VerifyFailure(seq: expected, reason: "malformed key of \(k.count) bytes")
                return false
              }
              if seq > meta.headSeq { return false }  // appended after we read meta (live writer)
              guard seq == expected else {
                report.firstBad = VerifyFailure(
                  seq: expected, reason: "record \(expected) is missing (next stored seq is \(seq))")
                return false
              }
              let h = try RecordFormat.parse(v, key: seq)
              if checksumsOnly {
                // The checkpoints' own checksums too (cheap: one per interval), not their hashes.
                guard try checkpoints.isIntact(seq: seq) else {
                  report.firstBad = VerifyFailure(
                    seq: seq, reason: "chain checkpoint at seq \(seq) is damaged (length or checksum)")
                  return false
                }
                report.records += 1
                report.lastSeq = seq
                expected = seq + 1
                return true
              }
              if let link = h.v1?.previousHash {
                guard link == report.lastHash else {
                  report.firstBad = VerifyFailure(
                    seq: anchor + 1,
                    reason: "hash chain broken: record \(seq)'s previous hash does not match the chain recomputed through record \(seq - 1)"
                      + (anchor + 1 < seq ? " (one of records \(anchor + 1)...\(seq - 1) was altered)" : ""))
                  return false
                }
                anchor = seq - 1
              }
              let r = try shared.decode(h, txn: txn, previousHash: report.lastHash, context: ctx)
              switch try checkpoints.check(seq: seq, hash: r.hash) {
              case .none: break
              case .matches: anchor = seq
              case .damaged:
                report.firstBad = VerifyFailure(
                  seq: seq, reason: "chain checkpoint at seq \(seq) is damaged (length or checksum)")
                return false
              case .differs:
                report.firstBad = VerifyFailure(
                  seq: anchor + 1,
                  reason:
                    "hash chain broken: the chain hash of record \(seq) does not match its checkpoint (one of records \(anchor + 1)...\(seq) was altered, or the checkpoint was)"
                )
                return false
              }
              report.records += 1
              report.lastSeq = seq
              report.lastHash = r.hash
              expected = seq + 1
              return true
            }
            guard more == true else {
              done = true
              break
            }
            op = MDB_NEXT
            key = nil
          }
        }
      } catch let e as EventLogError where e.code == .corrupt {
        report.firstBad = VerifyFailure(seq: e.seq ?? expected, reason: e.message)
      }
      progress?(report.records, meta.headSeq)
    }
    if report.firstBad == nil {
      if meta.headSeq > report.lastSeq {
        report.firstBad = VerifyFailure(
          seq: report.lastSeq + 1,
          reason: "meta head.seq is \(meta.headSeq) but the log ends at \(report.lastSeq)")
      } else if !checksumsOnly, meta.headHash != report.lastHash {
        report.firstBad = VerifyFailure(
          seq: min(anchor + 1, report.lastSeq),
          reason: "meta head.hash does not match the chain hash of record \(report.lastSeq)"
            + (anchor + 1 < report.lastSeq ? " (one of records \(anchor + 1)...\(report.lastSeq) was altered, or meta was)" : ""))
      } else {
        // A record past the head that meta names, in one snapshot (a live writer updates both together).
        let stray: UInt64? = try shared.env.withRead { txn in
          let head = try readHeadState(txn, shared.env.dbs).headSeq
          let c = try txn.cursor(shared.env.dbs.events)
          defer { c.close() }
          return try c.get(MDB_LAST) { k, _ in decodeBE64(k) }.flatMap { $0 }.flatMap { $0 > head ? head + 1 : nil }
        }
        if let stray {
          report.firstBad = VerifyFailure(seq: stray, reason: "record \(stray) lies beyond meta head.seq \(stray - 1)")
        }
      }
    }
    if let bad = report.firstBad {
      shared.logger.debug("event log verification failed", metadata: ["seq": "\(bad.seq)", "reason": "\(bad.reason)"])
    }
    return report
  }
}

/// Walks the `chain` database alongside `verify`'s record walk.
private final class CheckpointWalk {
  enum Outcome { case none, matches, damaged, differs }
  private let cursor: Cursor?
  private var next: (seq: UInt64, hash: [UInt8]?)?

  init(_ txn: Transaction, _ dbs: Databases, from: UInt64) throws {
    cursor = try dbs.chain.map { try txn.cursor($0) }
    next = try cursor?.get(MDB_SET_RANGE, key: seqKey(from), Self.entry) ?? nil
  }

  private static func entry(_ k: UnsafeRawBufferPointer, _ v: UnsafeRawBufferPointer) -> (UInt64, [UInt8]?) {
    let s = decodeBE64(k) ?? 0
    return (s, ChainCheckpoints.hash(v, seq: s))
  }

  /// Compares record `seq`'s chain hash with the checkpoint stored for `seq`, if any.
  func check(seq: UInt64, hash: [UInt8]) throws -> Outcome {
    guard let n = try take(seq) else { return .none }
    guard let stored = n.hash else { return .damaged }
    return stored == hash ? .matches : .differs
  }

  /// Whether the checkpoint stored for `seq`, if any, is well-formed (length and checksum): the quick
  /// start-up pass, which does not recompute the chain.
  func isIntact(seq: UInt64) throws -> Bool {
    guard let n = try take(seq) else { return true }
    return n.hash != nil
  }

  /// The checkpoint stored for `seq` (nil if none), moving past it; seqs are asked in ascending order.
  private func take(_ seq: UInt64) throws -> (seq: UInt64, hash: [UInt8]?)? {
    while let n = next, n.seq < seq { next = try cursor?.get(MDB_NEXT, Self.entry) ?? nil }
    guard let n = next, n.seq == seq else { return nil }
    next = try cursor?.get(MDB_NEXT, Self.entry) ?? nil
    return n
  }

  func close() { cursor?.close() }
}
