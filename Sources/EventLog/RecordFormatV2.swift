// Version 2 records: the body (header strings + payload, compressed together; v3 stores the same body) and
// the v2 value framing (older builds wrote it; read, and written by tests of mixed logs).
// Layout in ``RecordFormat``.

extension RecordFormat {
  /// Largest accepted uncompressed v2 body: the payload limit plus the header strings and their varints.
  static let maxBodyBytes = EventLog.maxPayloadBytes + 255 + 4 * 65_535 + 60

  /// Appends the uncompressed v2/v3 body of `event` to `out`.
  static func appendBody(of event: NewEvent, to out: inout [UInt8]) {
    let t = event.type.utf8
    let k = event.aggregate.kind.utf8
    let i = event.aggregate.id.utf8
    let a = event.actor.utf8
    let r = event.requestID.utf8
    out.reserveCapacity(out.count + 16 + t.count + k.count + i.count + a.count + r.count + event.payload.count)
    out.appendVarint(UInt64(event.payloadVersion))
    out.appendVarint(UInt64(t.count))
    out.appendVarint(UInt64(k.count))
    out.appendVarint(UInt64(i.count))
    out.appendVarint(UInt64(a.count))
    out.appendVarint(UInt64(r.count))
    // One contiguous copy per string (`withUTF8`), not a byte-by-byte append of the UTF-8 view.
    func put(_ s: String) {
      var s = s
      s.withUTF8 { out.append(contentsOf: $0) }
    }
    put(event.type)
    put(event.aggregate.kind)
    put(event.aggregate.id)
    put(event.actor)
    put(event.requestID)
    out.append(contentsOf: event.payload)
  }

  /// The uncompressed v2/v3 body of `event`.
  static func body(of event: NewEvent) -> [UInt8] {
    var out = [UInt8]()
    appendBody(of: event, to: &out)
    return out
  }

  /// The v2/v3 body of a decoded record (used to train dictionaries on what new records compress).
  static func body(of r: EventRecord) -> [UInt8] {
    body(
      of: NewEvent(
        type: r.type, aggregate: r.aggregate, actor: r.actor, requestID: r.requestID,
        payloadVersion: r.payloadVersion, payload: r.payload))
  }

  /// A v2 value without its trailing CRC (older builds wrote these; kept for tests of mixed logs): seal it
  /// with ``seal(_:seq:into:)``. `stored` is the body frame without magic (``Compressor/compressFrame(_:dict:)``)
  /// or, when `raw`, the body itself; `bodyLength` the uncompressed body length.
  static func unsealedV2(
    timestampNs: UInt64, dictionaryID: UInt32, stored: UnsafeRawBufferPointer, raw: Bool, bodyLength: Int
  ) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(24 + stored.count + checksumSize)
    out.append(2)
    out.append(raw ? flagRaw : 0)
    out.appendBE(timestampNs)
    out.appendVarint(UInt64(raw ? 0 : dictionaryID))
    out.appendVarint(UInt64(bodyLength))
    out.append(contentsOf: stored)
    return out
  }

  /// Writes a v2 or v3 `unsealed` value followed by its CRC-32C under `seq` (key then value) into `dst`
  /// (exactly `unsealed.count + 4` bytes).
  static func seal(_ unsealed: UnsafeRawBufferPointer, seq: UInt64, into dst: UnsafeMutableRawBufferPointer) {
    dst.copyMemory(from: unsealed)
    let crc = CRC32C.checksum(key: seq, unsealed)
    dst.storeBytes(of: crc.bigEndian, toByteOffset: unsealed.count, as: UInt32.self)
  }

  /// `unsealed` followed by its CRC-32C under `seq` (v2 and v3 values are sealed the same way).
  static func sealed(_ unsealed: [UInt8], seq: UInt64) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: unsealed.count + checksumSize) { buf, n in
      unsealed.withUnsafeBytes { seal($0, seq: seq, into: UnsafeMutableRawBufferPointer(buf)) }
      n = unsealed.count + checksumSize
    }
  }

  /// A v2 or v3 value without its trailing CRC-32C, once that CRC matches `key` and the rest. Throws `.corrupt`
  /// naming `key` when the value is shorter than `minimumBytes` or the checksum does not match.
  static func checkedBody(_ value: UnsafeRawBufferPointer, key: UInt64, minimumBytes: Int) throws -> UnsafeRawBufferPointer {
    guard value.count >= minimumBytes else { throw EventLogError.corrupt(key, "record \(key): too short (\(value.count) bytes)") }
    let body = UnsafeRawBufferPointer(rebasing: value[0..<(value.count - checksumSize)])
    let stored = UInt32(bigEndian: value.loadUnaligned(fromByteOffset: body.count, as: UInt32.self))
    let computed = CRC32C.checksum(key: key, body)
    guard stored == computed else {
      throw EventLogError.corrupt(key, "record \(key): checksum mismatch (stored \(hex32(stored)), computed \(hex32(computed)))")
    }
    return body
  }

  /// Encodes one complete v2 value stored under `seq` (tests of mixed logs; see ``unsealedV2(timestampNs:dictionaryID:stored:raw:bodyLength:)``).
  static func encodeV2(
    seq: UInt64, timestampNs: UInt64, dictionaryID: UInt32, stored: [UInt8], raw: Bool, bodyLength: Int
  ) -> [UInt8] {
    let u = stored.withUnsafeBytes {
      unsealedV2(timestampNs: timestampNs, dictionaryID: dictionaryID, stored: $0, raw: raw, bodyLength: bodyLength)
    }
    return sealed(u, seq: seq)
  }

  /// Parses and checksums a v2 value (see ``parse(_:key:)``); the body is not decompressed.
  static func parseV2(_ value: UnsafeRawBufferPointer, key: UInt64) throws -> Header {
    func bad(_ reason: String) -> EventLogError { .corrupt(key, "record \(key): \(reason)") }
    let body = try checkedBody(value, key: key, minimumBytes: 12 + checksumSize)
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

  /// The fields of an uncompressed v2 body as slices of it (no copy, no string): what the chain hash reads.
  struct BodySlices {
    var payloadVersion: UInt16
    var type: UnsafeRawBufferPointer
    var kind: UnsafeRawBufferPointer
    var id: UnsafeRawBufferPointer
    var actor: UnsafeRawBufferPointer
    var requestID: UnsafeRawBufferPointer
    var payload: UnsafeRawBufferPointer
  }

  /// Splits an uncompressed v2 body into slices, checking its varints and lengths (not the strings' UTF-8:
  /// making the strings checks that). Throws `.corrupt` naming `seq`.
  static func sliceBody(_ b: UnsafeRawBufferPointer, seq: UInt64) throws -> BodySlices {
    func bad(_ reason: String) -> EventLogError { .corrupt(seq, "record \(seq): body: \(reason)") }
    var r = ByteReader(b)
    guard let pv = r.varint(), pv <= UInt64(UInt16.max) else { throw bad("bad payload version") }
    guard let t = r.varint(), t <= 255, let k = r.varint(), k <= 65_535, let i = r.varint(), i <= 65_535,
      let a = r.varint(), a <= 65_535, let q = r.varint(), q <= 65_535
    else { throw bad("bad string length") }
    guard t > 0, k > 0 else { throw bad("empty event type or aggregate kind") }
    guard let type = r.bytes(Int(t)), let kind = r.bytes(Int(k)), let id = r.bytes(Int(i)),
      let actor = r.bytes(Int(a)), let req = r.bytes(Int(q))
    else { throw bad("truncated or invalid UTF-8 header strings") }
    return BodySlices(
      payloadVersion: UInt16(pv), type: type, kind: kind, id: id, actor: actor, requestID: req,
      payload: UnsafeRawBufferPointer(rebasing: b[r.offset...]))
  }

  /// The header strings of `s` (`strings`, optional, reuses the strings of repeating short fields — type,
  /// kind, actor — between records); throws `.corrupt` naming `seq` for invalid UTF-8.
  static func strings(of s: BodySlices, seq: UInt64, strings: StringInterner?) throws -> (
    type: String, kind: String, id: String, actor: String, requestID: String
  ) {
    func short(_ b: UnsafeRawBufferPointer) -> String? {
      if let strings { return strings.string(b) }
      return utf8String(b)
    }
    guard let type = short(s.type), let kind = short(s.kind), let id = utf8String(s.id), let actor = short(s.actor),
      let req = utf8String(s.requestID)
    else { throw EventLogError.corrupt(seq, "record \(seq): body: truncated or invalid UTF-8 header strings") }
    return (type, kind, id, actor, req)
  }

  /// Splits an uncompressed v2 body into its fields. Throws `.corrupt` naming `seq`.
  /// `strings` (optional) reuses the strings of repeating short fields (type, kind, actor) between records.
  static func parseBody(_ b: UnsafeRawBufferPointer, seq: UInt64, strings: StringInterner? = nil) throws -> Fields {
    let s = try sliceBody(b, seq: seq)
    let f = try Self.strings(of: s, seq: seq, strings: strings)
    return Fields(
      payloadVersion: s.payloadVersion, type: f.type, kind: f.kind, id: f.id, actor: f.actor, requestID: f.requestID,
      payload: Array(s.payload))
  }
}
