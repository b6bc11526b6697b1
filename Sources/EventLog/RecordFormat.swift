import Crypto

/// The stored record format (format version 1). One record is one LMDB value in the `events` database under
/// its 8-byte big-endian `seq` key. All integers are big-endian; strings are UTF-8 without terminator.
///
/// ```
/// offset  size  field
///      0     4  magic "OSEV" (0x4F 0x53 0x45 0x56)
///      4     1  format version (1)
///      5     1  flags: bit 0 = payload stored raw (not zstd-compressed); bits 1-7 must be 0
///      6     2  payload schema version (u16)
///      8     8  seq (u64); must equal the key
///     16     8  timestamp, ns since the Unix epoch, UTC (u64)
///     24     4  zstd dictionary id (u32; 0 = no dictionary; always 0 when raw)
///     28     4  U = uncompressed payload length in bytes (u32)
///     32     4  P = stored payload length in bytes (u32)
///     36     1  T = event type length (u8, 1...255)
///     37     2  K = aggregate kind length (u16)
///     39     2  I = aggregate id length (u16)
///     41     2  A = actor length (u16)
///     43     2  R = request id length (u16)
///     45    32  previous record's chain hash (32 zero bytes for seq 1)
///     77     T  event type
///      .     K  aggregate kind
///      .     I  aggregate id
///      .     A  actor
///      .     R  request id
///      .     P  payload: one zstd frame (decompresses to exactly U bytes) or, when flag bit 0 is set, the raw
///               payload (P == U)
///  end-4     4  CRC-32C (Castagnoli) of every preceding byte of this value
/// ```
/// The value's length must be exactly `77 + T + K + I + A + R + P + 4`.
///
/// Chain hash (SHA-256), independent of compression so records may be re-encoded without breaking the chain:
/// ```
/// hash(n) = SHA256( hash(n-1)            32 bytes; zeros for seq 1
///                 || seq                 u64
///                 || timestamp           u64
///                 || payload version     u16
///                 || len(type)  u32 || type
///                 || len(kind)  u32 || kind
///                 || len(id)    u32 || id
///                 || len(actor) u32 || actor
///                 || len(request id) u32 || request id
///                 || len(payload) u64 || uncompressed payload )
/// ```
/// The `meta` database keeps `head.seq` (u64) and `head.hash` (32 bytes) of the newest record, updated in the
/// same transaction as the records. `verify()` recomputes both the checksums and the chain.
public enum RecordFormat {
  public static let magic: [UInt8] = [0x4F, 0x53, 0x45, 0x56]
  public static let formatVersion: UInt8 = 1
  static let fixedHeaderSize = 77
  static let checksumSize = 4
  static let flagRaw: UInt8 = 1
  static let zeroHash = [UInt8](repeating: 0, count: 32)

  /// Header fields of one stored record; `storedPayload` points into the transaction's memory.
  struct Header {
    var seq: UInt64
    var flags: UInt8
    var payloadVersion: UInt16
    var timestampNs: UInt64
    var dictionaryID: UInt32
    var uncompressedLength: Int
    var type: String
    var kind: String
    var id: String
    var actor: String
    var requestID: String
    var previousHash: [UInt8]
    var storedPayload: UnsafeRawBufferPointer
    var storedSize: Int
    var isRaw: Bool { flags & RecordFormat.flagRaw != 0 }
  }

  /// Encodes one record. `storedPayload` is the zstd frame (or the raw payload when `raw`).
  static func encode(
    seq: UInt64, timestampNs: UInt64, event: NewEvent, dictionaryID: UInt32, storedPayload: [UInt8],
    raw: Bool, previousHash: [UInt8]
  ) -> [UInt8] {
    let t = Array(event.type.utf8), k = Array(event.aggregate.kind.utf8), i = Array(event.aggregate.id.utf8)
    let a = Array(event.actor.utf8), r = Array(event.requestID.utf8)
    var out = [UInt8]()
    out.reserveCapacity(fixedHeaderSize + t.count + k.count + i.count + a.count + r.count + storedPayload.count + 4)
    out += magic
    out.append(formatVersion)
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

  /// Parses and checksums a stored value. Never traps: every length is bounds-checked and a failure is
  /// `.corrupt` naming `key` (the seq the value is stored under).
  static func parse(_ value: UnsafeRawBufferPointer, key: UInt64) throws -> Header {
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
    guard let version = r.u8(), version == formatVersion else { throw bad("unknown format version") }
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
      seq: seq, flags: flags, payloadVersion: pv, timestampNs: ts, dictionaryID: dict,
      uncompressedLength: Int(ulen), type: type, kind: kind, id: id, actor: actor, requestID: req,
      previousHash: Array(prev), storedPayload: payload, storedSize: value.count)
  }

  /// The chain hash of a record (see the type's documentation for the exact input).
  static func chainHash(
    previousHash: [UInt8], seq: UInt64, timestampNs: UInt64, payloadVersion: UInt16, type: String,
    kind: String, id: String, actor: String, requestID: String, payload: UnsafeRawBufferPointer
  ) -> [UInt8] {
    var h = SHA256()
    var fixed = previousHash
    fixed.appendBE(seq)
    fixed.appendBE(timestampNs)
    fixed.appendBE(payloadVersion)
    for s in [type, kind, id, actor, requestID] {
      let u = Array(s.utf8)
      fixed.appendBE(UInt32(u.count))
      fixed += u
    }
    fixed.appendBE(UInt64(payload.count))
    fixed.withUnsafeBytes { h.update(bufferPointer: $0) }
    h.update(bufferPointer: payload)
    return Array(h.finalize())
  }

  static func chainHash(previousHash: [UInt8], seq: UInt64, timestampNs: UInt64, event: NewEvent) -> [UInt8] {
    event.payload.withUnsafeBytes {
      chainHash(
        previousHash: previousHash, seq: seq, timestampNs: timestampNs, payloadVersion: event.payloadVersion,
        type: event.type, kind: event.aggregate.kind, id: event.aggregate.id, actor: event.actor,
        requestID: event.requestID, payload: $0)
    }
  }

  /// Checks the limits documented on ``NewEvent``.
  static func validate(_ e: NewEvent) throws {
    let t = e.type.utf8.count
    guard t >= 1 && t <= 255 else { throw EventLogError.invalid("event type must be 1-255 bytes, got \(t)") }
    guard !e.aggregate.kind.isEmpty else { throw EventLogError.invalid("aggregate kind must not be empty") }
    for (name, s) in [("aggregate kind", e.aggregate.kind), ("aggregate id", e.aggregate.id),
                      ("actor", e.actor), ("request id", e.requestID)] where s.utf8.count > 65_535 {
      throw EventLogError.invalid("\(name) exceeds 65535 bytes")
    }
    guard e.payload.count <= EventLog.maxPayloadBytes else {
      throw EventLogError.invalid("payload of \(e.payload.count) bytes exceeds \(EventLog.maxPayloadBytes)")
    }
  }
}

func hex32(_ v: UInt32) -> String {
  let s = String(v, radix: 16)
  return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
}
