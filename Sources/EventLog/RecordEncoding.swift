import Foundation
import Synchronization

/// A v3 value without its CRC (``RecordFormat/unsealedV3(timestampNs:dictionaryID:storage:stored:bodyLength:)``)
/// and whether its body is stored raw.
typealias EncodedRecord = (unsealed: [UInt8], raw: Bool)

/// Reusable state of one encoding worker: a zstd compression context and the body buffer.
final class RecordEncoder {
  let compressor: Compressor
  private var body: [UInt8] = []

  init(compressor: Compressor) { self.compressor = compressor }

  /// Encodes one event (body, compression with `dict`, framing) without its CRC.
  func encode(_ e: NewEvent, dict: ZstdDictionary?, dictionaryID: UInt32) throws -> EncodedRecord {
    body.removeAll(keepingCapacity: true)
    RecordFormat.appendBody(of: e, to: &body)
    return try body.withUnsafeBytes { b in
      let c = try compressor.compressBody(b, dict: dict)
      return (
        unsealed: RecordFormat.unsealedV3(
          timestampNs: e.timestampNs ?? 0, dictionaryID: dictionaryID,
          storage: c.map { $0.block ? .block : .frame } ?? .raw, stored: c?.stored ?? b, bodyLength: b.count),
        raw: c == nil
      )
    }
  }
}

extension Writer {
  /// Events per call from which encoding is spread over the cores (bulk loads, restores, imports): below it
  /// the hand-off costs more than it saves.
  static let parallelEncodeThreshold = 256

  /// The cores encoding may use, read once: Foundation's `activeProcessorCount` opens and reads the cgroup's
  /// cpu quota and cpuset files on every call, which had cost every commit two file reads (seen in strace).
  static let encodingCores = min(ProcessInfo.processInfo.activeProcessorCount, 4)

  /// Encodes `events` in order, compressing with the active dictionary. Large calls are cut into one
  /// contiguous slice per core, each compressed on its own thread with its own zstd context (compression is
  /// about 60 % of the writer's work per event, issue 14); the result is identical to a sequential encoding.
  func encodeRecords(_ events: [NewEvent], dictionaryID: UInt32) throws -> [EncodedRecord] {
    let dict = activeDictionary
    if events.count < Self.parallelEncodeThreshold {
      return try events.map { try encoder.encode($0, dict: dict, dictionaryID: dictionaryID) }
    }
    let workers = min(Self.encodingCores, events.count / (Self.parallelEncodeThreshold / 2))
    if workers < 2 { return try events.map { try encoder.encode($0, dict: dict, dictionaryID: dictionaryID) } }
    while encoders.count < workers - 1 {
      encoders.append(RecordEncoder(compressor: try Compressor(options: shared.options)))
    }
    let job = ParallelEncode(
      encoders: [encoder] + encoders, count: events.count, workers: workers)
    DispatchQueue.concurrentPerform(iterations: workers) { w in
      job.run(worker: w, events: events, dict: dict, dictionaryID: dictionaryID)
    }
    if let failure = job.failure.withLock({ $0 }) { throw failure }
    return job.slots.map { $0! }
  }
}

/// One parallel encoding: worker `w` fills `slots[w*per ..< (w+1)*per]` with its own encoder, so no slot and
/// no encoder is touched by two threads (hence `@unchecked Sendable`).
private final class ParallelEncode: @unchecked Sendable {
  let encoders: [RecordEncoder]
  let slots: UnsafeMutableBufferPointer<EncodedRecord?>
  let per: Int
  let failure = Mutex<(any Error)?>(nil)

  init(encoders: [RecordEncoder], count: Int, workers: Int) {
    self.encoders = encoders
    slots = .allocate(capacity: count)
    slots.initialize(repeating: nil)
    per = (count + workers - 1) / workers
  }

  deinit {
    _ = slots.deinitialize()
    slots.deallocate()
  }

  func run(worker w: Int, events: [NewEvent], dict: ZstdDictionary?, dictionaryID: UInt32) {
    let lo = w * per
    let hi = min(events.count, lo + per)
    guard lo < hi else { return }
    do {
      for k in lo..<hi { slots[k] = try encoders[w].encode(events[k], dict: dict, dictionaryID: dictionaryID) }
    } catch {
      failure.withLock { if $0 == nil { $0 = error } }
    }
  }
}
