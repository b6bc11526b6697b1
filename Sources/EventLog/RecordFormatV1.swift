// Version 1 records: encoder (tests) and parser (old logs). Layout in ``RecordFormat``.

extension RecordFormat {
  /// Encodes one version 1 record (older builds wrote these; kept for tests of mixed logs). `storedPayload` is the zstd frame (or the raw payload when `raw`).
  static func encodeV1(
    seq: UInt64, timestampNs: UInt64, event: NewEvent, dictionaryID: UInt32, storedPayload: [UInt8],
    raw: Bool, previousHash: [UInt8]
  ) -> [UInt8] {
    let t = Array(event.type.utf8)
    let k = Array(event.aggregate.kind.utf8)
    let i = Array(event.aggregate.id.utf8)
    let a = Array(event.actor.utf8)
    let r = Array(event.requestID.utf8)
    var out = [UInt8]()
    out.reserveCapacity(fixedHeaderSize + t.count + k.count + i.count + a.count + r.count + storedPayload.count + 4)
    out += magic
    out.append(1)
    out.append(raw ? flagRaw : 0)
    out.appendBE(event.payloadVersion)
    out.appendBE(seq)
    out.appendBE(timestampNs)
    out.appendBE(raw ? 0 : dictionaryID)
    out.appendBE(UInt32(event.payload.count))
    out.appendBE(UInt32(storedPayload.count))
    out.append(UInt8(t.count))
    out.appendBE(UInt16(k.count))
    out.appendBE(UInt16(i.count))
    out.appendBE(UInt16(a.count))
    out.appendBE(UInt16(r.count))
    out += previousHash
    out += t
    out += k
    out += i
    out += a
    out += r
    out += storedPayload
    out.appendBE(CRC32C.checksum(out))
    return out
  }

  /// Parses and checksums a version 1 value (see ``parse(_:key:)``).
  static func parseV1(_ value: UnsafeRawBufferPointer, key: UInt64) throws -> Header {
    func bad(_ reason: String) -> EventLogError { .corrupt(key, "record \(key): \(reason)") }
    guard value.count >= fixedHeaderSize + 1 + checksumSize else { throw bad("too short (\(value.count) bytes)") }
    let body = UnsafeRawBufferPointer(rebasing: value[0..<(value.count - checksumSize)])
    var tail = ByteReader(value, offset: value.count - checksumSize)
    guard let stored = tail.u32() else { throw bad("missing checksum") }
    let computed = CRC32C.checksum(body)
    guard stored == computed else {
      throw bad("checksum mismatch (stored \(hex32(stored)), computed \(hex32(computed)))")
    }
    var r = ByteReader(body)
    guard let m = r.bytes(4), Array(m) == magic else { throw bad("bad magic") }
    guard let version = r.u8(), version == 1 else { throw bad("unknown format version") }
    guard let flags = r.u8(), flags & ~flagRaw == 0 else { throw bad("unknown flags") }
    guard let pv = r.u16(), let seq = r.u64(), let ts = r.u64(), let dict = r.u32(), let ulen = r.u32(),
      let plen = r.u32(), let tl = r.u8(), let kl = r.u16(), let il = r.u16(), let al = r.u16(),
      let rl = r.u16(), let prev = r.bytes(32)
    else { throw bad("truncated header") }
    guard seq == key else { throw bad("seq field \(seq) does not match key") }
    guard tl > 0 else { throw bad("empty event type") }
    let expected = fixedHeaderSize + Int(tl) + Int(kl) + Int(il) + Int(al) + Int(rl) + Int(plen)
    guard expected == body.count else { throw bad("length fields do not add up (\(expected) vs \(body.count))") }
    guard let type = r.string(Int(tl)), let kind = r.string(Int(kl)), let id = r.string(Int(il)),
      let actor = r.string(Int(al)), let req = r.string(Int(rl))
    else { throw bad("invalid UTF-8 in header strings") }
    guard let payload = r.bytes(Int(plen)) else { throw bad("truncated payload") }
    let raw = flags & flagRaw != 0
    if raw && (plen != ulen || dict != 0) { throw bad("raw payload with inconsistent lengths or dictionary") }
    guard Int(ulen) <= EventLog.maxPayloadBytes else { throw bad("uncompressed length \(ulen) exceeds limit") }
    return Header(
      version: 1, seq: seq, flags: flags, timestampNs: ts, dictionaryID: dict, uncompressedLength: Int(ulen),
      stored: payload, storedSize: value.count,
      v1: V1Fields(
        payloadVersion: pv, type: type, kind: kind, id: id, actor: actor, requestID: req,
        previousHash: Array(prev)))
  }

}
