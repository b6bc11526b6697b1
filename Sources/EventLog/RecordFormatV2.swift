// Version 2 records: the body (header strings + payload, compressed together) and the value framing.
// Layout in ``RecordFormat``.

extension RecordFormat {
  /// Largest accepted uncompressed v2 body: the payload limit plus the header strings and their varints.
  static let maxBodyBytes = EventLog.maxPayloadBytes + 255 + 4 * 65_535 + 60

  /// The uncompressed v2 body of `event`.
  static func body(of event: NewEvent) -> [UInt8] {
    let t = event.type.utf8, k = event.aggregate.kind.utf8, i = event.aggregate.id.utf8
    let a = event.actor.utf8, r = event.requestID.utf8
    var out = [UInt8]()
    out.reserveCapacity(16 + t.count + k.count + i.count + a.count + r.count + event.payload.count)
    out.appendVarint(UInt64(event.payloadVersion))
    for n in [t.count, k.count, i.count, a.count, r.count] { out.appendVarint(UInt64(n)) }
    out += t
    out += k
    out += i
    out += a
    out += r
    out += event.payload
    return out
  }

  /// The v2 body of a decoded record (used to train dictionaries on what v2 compresses).
  static func body(of r: EventRecord) -> [UInt8] {
    body(
      of: NewEvent(
        type: r.type, aggregate: r.aggregate, actor: r.actor, requestID: r.requestID,
        payloadVersion: r.payloadVersion, payload: r.payload))
  }

  /// Encodes one v2 value stored under `seq`. `stored` is ``Compressor/compressBody`` output (raw when `raw`),
  /// `bodyLength` the uncompressed body length.
  static func encodeV2(
    seq: UInt64, timestampNs: UInt64, dictionaryID: UInt32, stored: [UInt8], raw: Bool, bodyLength: Int
  ) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(24 + stored.count)
    out.append(2)
    out.append(raw ? flagRaw : 0)
    out.appendBE(timestampNs)
    out.appendVarint(UInt64(raw ? 0 : dictionaryID))
    out.appendVarint(UInt64(bodyLength))
    out += stored
    let crc = out.withUnsafeBytes { CRC32C.checksum(key: seq, $0) }
    out.appendBE(crc)
    return out
  }

  /// Parses and checksums a v2 value (see ``parse(_:key:)``); the body is not decompressed.
  static func parseV2(_ value: UnsafeRawBufferPointer, key: UInt64) throws -> Header {
    func bad(_ reason: String) -> EventLogError { .corrupt(key, "record \(key): \(reason)") }
    guard value.count >= 12 + checksumSize else { throw bad("too short (\(value.count) bytes)") }
    let body = UnsafeRawBufferPointer(rebasing: value[0..<(value.count - checksumSize)])
    var tail = ByteReader(value, offset: value.count - checksumSize)
    guard let stored = tail.u32() else { throw bad("missing checksum") }
    let computed = CRC32C.checksum(key: key, body)
    guard stored == computed else {
      throw bad("checksum mismatch (stored \(hex32(stored)), computed \(hex32(computed)))")
    }
    var r = ByteReader(body)
    guard r.u8() == 2 else { throw bad("unknown format version") }
    guard let flags = r.u8(), flags & ~flagRaw == 0 else { throw bad("unknown flags") }
    guard let ts = r.u64(), let dict = r.varint(), let ulen = r.varint() else { throw bad("truncated header") }
    guard dict <= UInt64(UInt32.max) else { throw bad("dictionary id \(dict) out of range") }
    guard ulen <= UInt64(maxBodyBytes) else { throw bad("body length \(ulen) exceeds limit") }
    let payload = UnsafeRawBufferPointer(rebasing: body[r.offset...])
    let raw = flags & flagRaw != 0
    if raw && (payload.count != Int(ulen) || dict != 0) {
      throw bad("raw body with inconsistent lengths or dictionary")
    }
    if !raw && payload.isEmpty { throw bad("empty compressed body") }
    return Header(
      version: 2, seq: key, flags: flags, timestampNs: ts, dictionaryID: UInt32(dict),
      uncompressedLength: Int(ulen), stored: payload, storedSize: value.count, v1: nil)
  }

  /// Splits an uncompressed v2 body into its fields. Throws `.corrupt` naming `seq`.
  static func parseBody(_ b: UnsafeRawBufferPointer, seq: UInt64) throws -> Fields {
    func bad(_ reason: String) -> EventLogError { .corrupt(seq, "record \(seq): body: \(reason)") }
    var r = ByteReader(b)
    guard let pv = r.varint(), pv <= UInt64(UInt16.max) else { throw bad("bad payload version") }
    var lens = [Int]()
    for limit in [255, 65_535, 65_535, 65_535, 65_535] {
      guard let n = r.varint(), n <= UInt64(limit) else { throw bad("bad string length") }
      lens.append(Int(n))
    }
    guard lens[0] > 0, lens[1] > 0 else { throw bad("empty event type or aggregate kind") }
    guard let type = r.string(lens[0]), let kind = r.string(lens[1]), let id = r.string(lens[2]),
      let actor = r.string(lens[3]), let req = r.string(lens[4])
    else { throw bad("truncated or invalid UTF-8 header strings") }
    return Fields(
      payloadVersion: UInt16(pv), type: type, kind: kind, id: id, actor: actor, requestID: req,
      payload: Array(UnsafeRawBufferPointer(rebasing: b[r.offset...])))
  }
}
