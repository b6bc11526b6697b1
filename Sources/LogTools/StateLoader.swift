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
  /// Opening path of a server (issue 17: never serve a log it cannot trust): the newest usable snapshot plus
  /// the records after it, after checking what that relies on —
  /// 1. every record's checksum, header and seq (gapless 1...head; ``EventLog/verify(checksumsOnly:progress:)``),
  ///    unless the log's open already checked every record's checksum and seq in its walk of the file
  ///    (``EventLog/recordsCheckedAtOpen`` equals the head: ``EventLog/Options/checkRecordsAtOpen``),
  /// 2. the head record: its chain hash equals `meta` head.hash and it links to the record before it,
  /// 3. the snapshot: it decodes, covers exactly its seq, and (version 2) holds the chain hash of the record at
  ///    its seq; a snapshot that fails falls back to the next older one, then to a replay from seq 1, and each
  ///    fallback is reported in `warnings` (the log stays the source of truth),
  /// 4. every replayed record links to the one before it and decodes.
  ///
  /// With `decodedAhead` holding the newest snapshot (decoded while the log's open walked the records), that
  /// snapshot is used as decoded there, with the same checks.
  /// - Returns: the state and the seq the snapshot covered (0 if none was used).
  /// - Throws: `EventLogError` (`.corrupt` naming the seq for damaged records), `ProjectionError` for
  ///   undecodable events.
  public static func load(
    _ log: EventLog, progress: ((UInt64, UInt64) -> Void)? = nil, decodedAhead: SnapshotDecodeAhead? = nil
  ) throws -> (state: GatewayState, snapshotSeq: UInt64, warnings: [String]) {
    let head = log.headSeq
    // Step 1 reads every record and needs none of the rest, so (when the open did not do it) it runs on a
    // thread of its own while steps 2–4 load the state (issue 14: restart time); its failure is still the one
    // reported first.
    let quick = log.recordsCheckedAtOpen == head ? nil : ConcurrentResult { try log.verify(checksumsOnly: true) }
    let loaded: (state: GatewayState, snapshotSeq: UInt64, warnings: [String])
    do {
      loaded = try loadChecked(log, head: head, progress: progress, decodedAhead: decodedAhead)
    } catch {
      if let bad = try quick?.value().firstBad { throw EventLogError(code: .corrupt, message: bad.reason, seq: bad.seq) }
      throw error
    }
    if let bad = try quick?.value().firstBad { throw EventLogError(code: .corrupt, message: bad.reason, seq: bad.seq) }
    return loaded
  }

  /// Steps 2–4 of ``load(_:progress:)``.
  static func loadChecked(
    _ log: EventLog, head: UInt64, progress: ((UInt64, UInt64) -> Void)?, decodedAhead: SnapshotDecodeAhead? = nil
  ) throws -> (
    state: GatewayState, snapshotSeq: UInt64, warnings: [String]
  ) {
    var headHash = [UInt8](repeating: 0, count: 32)
    if head > 0 {
      guard let rec = try log.record(at: head) else { throw EventLogError(code: .corrupt, message: "head record \(head) is missing", seq: head) }
      guard rec.hash == log.headHash else {
        throw EventLogError(code: .corrupt, message: "meta head.hash does not match the chain hash of record \(head)", seq: head)
      }
      let before = head > 1 ? try log.record(at: head - 1)?.hash : headHash
      guard rec.previousHash == before else {
        throw EventLogError(code: .corrupt, message: "hash chain broken: record \(head) does not link to record \(head - 1)", seq: head)
      }
      headHash = rec.hash
    }
    var state = GatewayState()
    var warnings: [String] = []
    var snapshotSeq: UInt64 = 0
    var chain = [UInt8](repeating: 0, count: 32)
    var rejected: [String] = []
    for seq in try log.snapshotSeqs(name: SnapshotCodec.projectionName) {
      guard seq <= head, seq > 0 else {
        rejected.append("snapshot at seq \(seq) lies beyond the head \(head)")
        continue
      }
      // Record errors are the log's damage (refused); snapshot errors only cost a longer replay.
      guard let rec = try log.record(at: seq) else { throw EventLogError(code: .corrupt, message: "record \(seq) is missing", seq: seq) }
      do {
        let decoded: GatewayState
        if let ahead = try decodedAhead?.take(seq: seq) {
          if let h = ahead.chainHash, h != rec.hash {
            rejected.append("snapshot at seq \(seq) does not match the chain hash of record \(seq)")
            continue
          }
          decoded = ahead.state
        } else {
          guard let snap = try log.snapshot(name: SnapshotCodec.projectionName, seq: seq) else { continue }
          if let h = snap.chainHash, h != rec.hash {
            rejected.append("snapshot at seq \(seq) does not match the chain hash of record \(seq)")
            continue
          }
          decoded = try SnapshotCodec.decode(snap.bytes)
        }
        guard decoded.lastSeq == seq else {
          rejected.append("snapshot at seq \(seq) holds the state of seq \(decoded.lastSeq)")
          continue
        }
        state = decoded
        snapshotSeq = seq
        chain = rec.hash
        break
      } catch let e as EventLogError {
        rejected.append("snapshot at seq \(seq) is damaged (\(e.message))")
      } catch {
        rejected.append("snapshot at seq \(seq) does not decode (\(error))")
      }
    }
    if !rejected.isEmpty {
      let from = snapshotSeq > 0 ? "the snapshot at seq \(snapshotSeq) and the records after it" : "every record from seq 1"
      warnings.append(rejected.joined(separator: "; ") + "; the state was rebuilt from \(from) (`openshell-replay rebuild` writes a fresh snapshot)")
    }
    try replay(log, into: &state, through: .head, chain: chain, progress: progress)
    guard state.lastSeq == head else {
      throw EventLogError(code: .corrupt, message: "the replay ended at seq \(state.lastSeq), not at the head \(head)", seq: state.lastSeq + 1)
    }
    return (state, snapshotSeq, warnings)
  }

  /// Replays from scratch up to `point`.
  public static func replay(_ log: EventLog, through point: ReplayPoint = .head, progress: ((UInt64, UInt64) -> Void)? = nil) throws -> GatewayState {
    var state = GatewayState()
    try replay(log, into: &state, through: point, progress: progress)
    return state
  }

  /// Applies records after `state.lastSeq` up to `point`, reading the log in chunks.
  /// With `chain` (the chain hash of the record at `state.lastSeq`) every record must follow the one before
  /// it (seq + 1, previous hash) or `.corrupt` is thrown naming it.
  public static func replay(
    _ log: EventLog, into state: inout GatewayState, through point: ReplayPoint, chain: [UInt8]? = nil, progress: ((UInt64, UInt64) -> Void)? = nil
  ) throws {
    var chain = chain
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
      if let prev = chain {
        guard record.seq == state.lastSeq + 1, record.previousHash == prev else {
          applyError = EventLogError(
            code: .corrupt, message: "hash chain broken: record \(record.seq) does not link to record \(state.lastSeq)", seq: record.seq)
          stop = true
          return
        }
        chain = record.hash
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

/// The result of `body`, computed on a thread of its own from the moment this is made; ``value()`` waits for it.
final class ConcurrentResult<T: Sendable>: @unchecked Sendable {
  private var result: Result<T, any Error>?
  private let done = DispatchSemaphore(value: 0)

  init(_ body: @escaping @Sendable () throws -> T) {
    Thread.detachNewThread { [self] in
      result = Result { try body() }
      done.signal()
    }
  }

  /// Waits for the result (once; later calls return it at once). Rethrows what `body` threw.
  func value() throws -> T {
    if result == nil { done.wait() }
    return try result!.get()
  }
}
