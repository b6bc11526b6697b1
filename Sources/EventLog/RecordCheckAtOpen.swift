/// The record checks a server's start needs, done inside the structural walk of `data.mdb` (``LMDBFileCheck``)
/// so that a start reads the file once (issue 14: restart ≤ 0.5 s on a 1M-event log; before, the walk and a
/// separate checksum pass each read all of it).
///
/// They are those of ``EventLog/verify(checksumsOnly:progress:)`` (issue 17: every record is checked at start):
/// - `events`: every value's CRC-32C matches — a version 3 or 2 value by its checksum (and v2 flags byte) alone,
///   any other version by ``RecordFormat/parse(_:key:)`` (which dispatches on the version byte: each format keeps
///   its own framing and checksum rules, and a value that fails is refused with its message) — its key is an
///   8-byte seq, and the seqs run gapless from 1 (the walk visits keys in order);
/// - `chain`: every checkpoint's length and checksum (``ChainCheckpoints/hash(_:seq:)``);
/// - after liblmdb opened the file (``confirm(headSeq:)``): the last record is `meta` head.seq (none missing
///   at the end, none beyond it) and no damaged checkpoint lies at or below the head.
///
/// Errors are `.corrupt` with the seq; the walk adds the file and page to the message.
final class RecordCheckAtOpen {
  /// The seq the next record must have.
  private(set) var nextSeq: UInt64 = 1
  /// The lowest seq of a checkpoint whose length or checksum is wrong.
  private(set) var firstDamagedCheckpoint: UInt64?

  /// The checks to hand to ``LMDBFileCheck/check(path:values:)``.
  var walkChecks: [String: LMDBValueCheck] {
    [
      // Strong captures: the walk drops these closures when it ends (`unowned` cost a check per record).
      "events": { k, v in try self.record(key: k, value: v) },
      ChainCheckpoints.name: { k, v in try self.checkpoint(key: k, value: v) },
    ]
  }

  func record(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws {
    guard key.count == 8 else { throw EventLogError.corrupt(nextSeq, "malformed key of \(key.count) bytes") }
    let seq = UInt64(bigEndian: key.loadUnaligned(as: UInt64.self))
    guard seq == nextSeq else {
      throw EventLogError.corrupt(nextSeq, "record \(nextSeq) is missing (next stored seq is \(seq))")
    }
    // Per record version (its first byte). Versions 3 (the one new records are written in) and 2: the CRC-32C
    // (over the 8-byte key and every byte but the last 4, which hold it big-endian; v2 also its flags byte),
    // without building the parsed header (issue 14: that cost ~40 ms per million records). Version 1, versions
    // added later and any value that fails go through RecordFormat.parse, which names the fault.
    if value.count >= 14, value[0] == 3 || (value[0] == 2 && value[1] & ~RecordFormat.flagRaw == 0),
      (try? RecordFormat.checkedBody(value, key: seq, minimumBytes: 14)) != nil
    {
      nextSeq = seq + 1
      return
    }
    _ = try RecordFormat.parse(value, key: seq)
    nextSeq = seq + 1
  }

  func checkpoint(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws {
    guard key.count == 8 else { throw EventLogError.corrupt(nil, "chain checkpoint with a malformed key of \(key.count) bytes") }
    let seq = UInt64(bigEndian: key.loadUnaligned(as: UInt64.self))
    if firstDamagedCheckpoint == nil, ChainCheckpoints.hash(value, seq: seq) == nil { firstDamagedCheckpoint = seq }
  }

  /// Compares what the walk saw with `meta` head.seq (read by liblmdb after the walk). Returns the head: every
  /// record 1...head was checked. Throws `.corrupt` naming the first seq at fault (the messages of `verify`).
  func confirm(headSeq: UInt64) throws -> UInt64 {
    let last = nextSeq - 1
    if let d = firstDamagedCheckpoint, d <= min(headSeq, last) {
      throw EventLogError.corrupt(d, "chain checkpoint at seq \(d) is damaged (length or checksum)")
    }
    if headSeq > last {
      throw EventLogError.corrupt(last + 1, "meta head.seq is \(headSeq) but the log ends at \(last)")
    }
    if last > headSeq {
      throw EventLogError.corrupt(headSeq + 1, "record \(headSeq + 1) lies beyond meta head.seq \(headSeq)")
    }
    return headSeq
  }
}
