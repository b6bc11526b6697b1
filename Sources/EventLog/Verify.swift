import CLMDB

/// The first problem `verify()` found.
public struct VerifyFailure: Sendable, Hashable, CustomStringConvertible {
  /// The first bad (or missing) seq.
  public let seq: UInt64
  public let reason: String
  public var description: String { "seq \(seq): \(reason)" }
}

/// Result of ``EventLog/verify(progress:)``.
public struct VerifyReport: Sendable, Hashable {
  /// Records checked and found good (all records when `firstBad == nil`).
  public var records: UInt64
  /// Head seq and hash recorded in `meta`.
  public var headSeq: UInt64
  public var headHash: [UInt8]
  /// Seq and chain hash of the last good record walked.
  public var lastSeq: UInt64
  public var lastHash: [UInt8]
  /// The first problem, or nil if the whole log verified.
  public var firstBad: VerifyFailure?
  public var isOK: Bool { firstBad == nil }
}

extension EventLog {
  /// Verifies the whole log in chunks (each one short read transaction of at most 1,024 records): per
  /// record the CRC-32C, header bounds, seq = key, gapless seqs from 1, the previous-hash link, successful
  /// decompression (with the referenced dictionary) to the recorded length; finally that `meta` head seq and
  /// hash equal the last record's. Stops at and reports the first bad seq with a reason (`firstBad`).
  ///
  /// With `checksumsOnly` (the quick pass a gateway runs at start-up) records are parsed and their checksums
  /// checked but not decompressed, so neither the chain nor `meta` head hash is checked (`lastHash` stays
  /// zero); gapless seqs and the head seq still are.
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
    var done = false
    while !done && report.firstBad == nil {
      do {
        try shared.env.withRead { txn in
          let c = try txn.cursor(shared.env.dbs.events)
          defer { c.close() }
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
                report.records += 1
                report.lastSeq = seq
                expected = seq + 1
                return true
              }
              guard h.previousHash == report.lastHash else {
                report.firstBad = VerifyFailure(
                  seq: seq, reason: "hash chain broken: previous hash does not match record \(seq - 1)")
                return false
              }
              let r = try shared.decode(h, txn: txn)
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
          seq: report.lastSeq, reason: "meta head.hash does not match the chain hash of record \(report.lastSeq)")
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
