import Foundation

/// Records a caller encoded before handing its call to the writer, and the dictionary they were compressed
/// with (0 = none).
struct PreEncoded: Sendable {
  var values: [EncodedRecord]
  var dictionaryID: UInt32
}

/// Record encoders lent to append callers (issue 14: 64 durable appenders). The writer thread runs one group
/// commit after another; whatever it does per event lengthens every round, while callers run in parallel on the
/// other cores. So a small call (below ``Writer/parallelEncodeThreshold`` events; larger ones are spread over
/// the cores by the writer) is validated and encoded — body, zstd compression, framing — by its caller with an
/// encoder from this pool, and the writer only seals, hashes and stores it.
final class EncoderPool: @unchecked Sendable {
  private let lock = NSLock()
  private var free: [RecordEncoder] = []
  private let options: EventLog.Options

  init(options: EventLog.Options) { self.options = options }

  /// Runs `body` with an encoder no other thread uses meanwhile (made on demand; at most one per concurrent
  /// caller is ever made, and they are kept for the next calls).
  func withEncoder<T>(_ body: (RecordEncoder) throws -> T) throws -> T {
    lock.lock()
    let lent = free.popLast()
    lock.unlock()
    let encoder = try lent ?? RecordEncoder(compressor: Compressor(options: options))
    defer {
      lock.lock()
      free.append(encoder)
      lock.unlock()
    }
    return try body(encoder)
  }
}

extension EventLog {
  /// Validates and encodes a small call's events on the caller's thread with the active dictionary (nil for a
  /// call the writer encodes itself: ``Writer/parallelEncodeThreshold`` events or more). The dictionary may be
  /// replaced before the writer stores the records: they keep the id they were compressed with, and stored
  /// dictionaries are never deleted. Throws `.invalidArgument` for an event the log refuses.
  func encodeOnCaller(_ events: [NewEvent]) throws -> PreEncoded? {
    guard !events.isEmpty, events.count < Writer.parallelEncodeThreshold else { return nil }
    for e in events { try RecordFormat.validate(e) }
    let id = shared.state.withLock { $0.activeDictionaryID }
    let dict = id == 0 ? nil : try shared.dictionary(id)
    let values = try shared.encoders.withEncoder { enc in
      try events.map { try enc.encode($0, dict: dict, dictionaryID: id) }
    }
    return PreEncoded(values: values, dictionaryID: id)
  }
}
