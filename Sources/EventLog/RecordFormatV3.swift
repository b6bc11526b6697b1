// Version 3 records: the v2 body in a shorter framing (issue 14). Layout in ``RecordFormat``.

extension RecordFormat {
  /// How a v3 value stores its body (the low two bits of its second field).
  enum V3Storage: UInt64 {
    /// The contents of the one compressed zstd block the body compresses to; the frame header and block
    /// header are rebuilt on read from the body length and the block length (``ZstdSingleBlock``).
    case block = 0
    /// The body itself, not compressed.
    case raw = 1
    /// A whole zstd frame without its magic number, as in v2 (bodies that do not fit one block).
    case frame = 2
  }

  /// Bit of ``Header/flags`` (set by the parser, never stored): `stored` is a v3 single block.
  static let flagBlock: UInt8 = 2

  /// A v3 value without its trailing CRC (the CRC covers the key, known only inside the write transaction):
  /// seal it with ``seal(_:seq:into:)``. `stored` is what ``Compressor/compressBody(_:dict:)`` returned
  /// (`storage` `.block` or `.frame`) or the body itself (`.raw`); `bodyLength` the uncompressed body length.
  static func unsealedV3(
    timestampNs: UInt64, dictionaryID: UInt32, storage: V3Storage, stored: UnsafeRawBufferPointer, bodyLength: Int
  ) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(22 + stored.count + checksumSize)
    out.append(3)
    out.appendBE(timestampNs)
    let dict = storage == .raw ? 0 : UInt64(dictionaryID)
    out.appendVarint(dict << 2 | storage.rawValue)
    out.appendVarint(UInt64(bodyLength))
    out.append(contentsOf: stored)
    return out
  }

  /// Encodes one complete v3 value stored under `seq` (tests; the writer seals in place).
  static func encodeV3(
    seq: UInt64, timestampNs: UInt64, dictionaryID: UInt32, storage: V3Storage, stored: [UInt8], bodyLength: Int
  ) -> [UInt8] {
    let u = stored.withUnsafeBytes {
      unsealedV3(
        timestampNs: timestampNs, dictionaryID: dictionaryID, storage: storage, stored: $0, bodyLength: bodyLength)
    }
    return sealed(u, seq: seq)
  }

  /// Parses and checksums a v3 value (see ``parse(_:key:)``); the body is not decompressed. A block's body
  /// length is at most ``ZstdSingleBlock/maxContentSize`` (what one block can hold), any other at most
  /// ``maxBodyBytes``.
  static func parseV3(_ value: UnsafeRawBufferPointer, key: UInt64) throws -> Header {
    func bad(_ reason: String) -> EventLogError { .corrupt(key, "record \(key): \(reason)") }
    let body = try checkedBody(value, key: key, minimumBytes: 11 + checksumSize)
    var r = ByteReader(body)
    guard r.u8() == 3 else { throw bad("unknown format version") }
    guard let ts = r.u64(), let field = r.varint(), let ulen = r.varint() else { throw bad("truncated header") }
    guard let storage = V3Storage(rawValue: field & 3) else { throw bad("unknown body storage \(field & 3)") }
    let dict = field >> 2
    guard dict <= UInt64(UInt32.max) else { throw bad("dictionary id \(dict) out of range") }
    let limit = storage == .block ? ZstdSingleBlock.maxContentSize : maxBodyBytes
    guard ulen <= UInt64(limit) else { throw bad("body length \(ulen) exceeds limit \(limit)") }
    let payload = UnsafeRawBufferPointer(rebasing: body[r.offset...])
    switch storage {
    case .raw:
      if payload.count != Int(ulen) || dict != 0 { throw bad("raw body with inconsistent lengths or dictionary") }
    case .block:
      if payload.isEmpty || ulen == 0 || payload.count > ZstdSingleBlock.maxContentSize {
        throw bad("zstd block of \(payload.count) bytes for a body of \(ulen) bytes")
      }
    case .frame:
      if payload.isEmpty { throw bad("empty compressed body") }
    }
    let flags = storage == .raw ? flagRaw : storage == .block ? flagBlock : 0
    return Header(
      version: 3, seq: key, flags: flags, timestampNs: ts, dictionaryID: UInt32(dict),
      uncompressedLength: Int(ulen), stored: payload, storedSize: value.count, v1: nil)
  }
}
