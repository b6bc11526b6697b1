import CLogHash

/// The stored record formats. One record is one LMDB value in the `events` database under its 8-byte
/// big-endian `seq` key. New appends write version 3; version 1 and 2 records (written by older builds) stay
/// readable next to them — the reader dispatches on the first byte (v1 starts with the magic "O" = 0x4F, v2
/// with 0x02, v3 with 0x03) — and are never rewritten. The `meta` key `format` is the newest version a
/// build that opened the log for writing appends (3 now; builds that read only up to 2 then refuse the log
/// instead of misreading it).
///
/// **Version 1** (integers big-endian, strings UTF-8 without terminator):
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
/// **Version 2** (issue 14: ~4× smaller). No stored seq (it is the key) and no per-record previous hash
/// (the chain is anchored by checkpoints, below); every header string is compressed together with the
/// payload, with the trained dictionary. `varint` = unsigned LEB128 (7 bits per byte, low group first).
/// ```
/// offset  size  field
///      0     1  format version (0x02)
///      1     1  flags: bit 0 = body stored raw (not zstd-compressed); bits 1-7 must be 0
///      2     8  timestamp, ns since the Unix epoch, UTC (u64 big-endian; outside the body so time filters
///               and `stats` need no decompression)
///     10     v  zstd dictionary id (varint, u32 range; 0 = none; always 0 when raw)
///      .     v  U = body length in bytes, uncompressed (varint)
///      .     P  stored body: a zstd frame WITHOUT its 4-byte magic number (0xFD2FB528, re-added on read;
///               no dictionary id and no checksum in the frame header, content size present) that
///               decompresses to exactly U bytes, or, when flag bit 0 is set, the raw body (P == U)
///  end-4     4  CRC-32C (Castagnoli) of the 8-byte key followed by every preceding byte of this value (so a
///               value moved under another key fails its checksum)
/// ```
/// Body (uncompressed): `varint payload schema version (u16 range) || varint T || varint K || varint I ||
/// varint A || varint R || type (T, 1...255) || aggregate kind (K, ≥ 1) || aggregate id (I) || actor (A) ||
/// request id (R) || payload (the rest)`.
///
/// **Version 3** (issue 14: 6–7 bytes less per record than v2): the same body, and the zstd frame's own
/// metadata left out where it repeats what the record stores. A body that compresses to one compressed
/// block is stored as that block's contents only: its 1-byte frame header descriptor, 1–4-byte frame
/// content size and 3-byte block header are a function of `U` and the block length `P` and are rebuilt on
/// read (``ZstdSingleBlock``; the writer keeps the short form only when zstd's frame is byte-for-byte the
/// rebuilt one). Flags and dictionary id share one varint.
/// ```
/// offset  size  field
///      0     1  format version (0x03)
///      1     8  timestamp, ns since the Unix epoch, UTC (u64 big-endian; fixed offset, outside the body)
///      9     v  S = dictionary id × 4 + storage (varint; dictionary id in u32 range, 0 = none)
///               storage (S & 3): 0 = one zstd compressed block, U ≤ 128 KiB, 1 ≤ P ≤ 128 KiB;
///               1 = raw body (P == U, dictionary id 0); 2 = a zstd frame without its magic number, as in v2;
///               3 = invalid
///      .     v  U = body length in bytes, uncompressed (varint)
///      .     P  stored body
///  end-4     4  CRC-32C (Castagnoli) of the 8-byte key followed by every preceding byte of this value (as v2)
/// ```
/// The frame storage 0 stands for is the magicless frame `0x20 | c << 6` (single segment, no checksum, no
/// dictionary id; c = 0 for U < 256, 1 for U < 65,792, else 2) `|| U` (c = 0: 1 byte; c = 1: U − 256 in
/// 2 bytes; c = 2: 4 bytes; little-endian) `|| (P << 3 | 0b101)` (3 bytes little-endian: last block,
/// compressed) `|| block` (RFC 8878 §3.1.1).
///
/// Chain hash (SHA-256). Its definition is independent of the encoding, so v1, v2 and v3 records chain the same
/// and records may be re-encoded without breaking the chain:
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
/// same transaction as the records. The `chain` database keeps chain checkpoints (see ``ChainCheckpoints``):
/// `seq` (u64 big-endian) → `hash(seq)` (32 bytes) || CRC-32C of key and hash (u32 big-endian), written for
/// every seq that is a multiple of ``ChainCheckpoints/interval`` (and once for the head when a log without
/// checkpoints is first appended to), in the same transaction as the record. A v2/v3 record's previous hash is
/// recomputed from the nearest checkpoint (or v1 record) before it — at most `interval` records away.
/// `verify()` recomputes the whole chain from seq 1 and compares it with every checkpoint, every v1
/// previous-hash link and `meta` head.hash.
public enum RecordFormat {
  /// "OSEV": the first four bytes of a version 1 record value.
  public static let magic: [UInt8] = [0x4F, 0x53, 0x45, 0x56]
  /// The version new records are written in.
  public static let formatVersion: UInt8 = 3
  /// Log format versions (`meta` `format`) this build reads.
  static let readableLogFormats: ClosedRange<UInt32> = 1...3
  static let fixedHeaderSize = 77
  static let checksumSize = 4
  static let flagRaw: UInt8 = 1
  static let zeroHash = [UInt8](repeating: 0, count: 32)

  /// Header strings stored outside the payload frame (version 1 only).
  struct V1Fields {
    var payloadVersion: UInt16
    var type: String
    var kind: String
    var id: String
    var actor: String
    var requestID: String
    var previousHash: [UInt8]
  }

  /// Framing of one stored record, checksum-verified; `stored` points into the transaction's memory and is
  /// the payload (v1) or the body (v2, v3), compressed unless `isRaw`: a zstd frame (without its magic
  /// number in v2/v3) or, when `isBlock` (v3), one zstd block whose frame and block headers are left out.
  struct Header {
    var version: UInt8
    var seq: UInt64
    var flags: UInt8
    var timestampNs: UInt64
    var dictionaryID: UInt32
    /// Uncompressed length of `stored`: the payload (v1) or the body (v2, v3).
    var uncompressedLength: Int
    var stored: UnsafeRawBufferPointer
    /// Size of the whole LMDB value.
    var storedSize: Int
    /// Header strings and the previous-hash link (v1 only; in v2 and v3 they are inside the body).
    var v1: V1Fields?
    var isRaw: Bool { flags & RecordFormat.flagRaw != 0 }
    var isBlock: Bool { flags & RecordFormat.flagBlock != 0 }
  }

  /// The fields of a decoded record besides seq and timestamp.
  struct Fields {
    var payloadVersion: UInt16
    var type: String
    var kind: String
    var id: String
    var actor: String
    var requestID: String
    var payload: [UInt8]
  }

  /// Parses and checksums a stored value of either version. Never traps: every length is bounds-checked and
  /// a failure is `.corrupt` naming `key` (the seq the value is stored under).
  static func parse(_ value: UnsafeRawBufferPointer, key: UInt64) throws -> Header {
    guard let first = value.first else { throw EventLogError.corrupt(key, "record \(key): too short (0 bytes)") }
    if first == 3 { return try parseV3(value, key: key) }
    if first == 2 { return try parseV2(value, key: key) }
    return try parseV1(value, key: key)
  }

  /// The chain hash of a record (see the type's documentation for the exact input).
  static func chainHash(
    previousHash: [UInt8], seq: UInt64, timestampNs: UInt64, payloadVersion: UInt16, type: String,
    kind: String, id: String, actor: String, requestID: String, payload: UnsafeRawBufferPointer
  ) -> [UInt8] {
    var hasher = ChainHasher()
    return hasher.hash(
      previousHash: previousHash, seq: seq, timestampNs: timestampNs, payloadVersion: payloadVersion, type: type,
      kind: kind, id: id, actor: actor, requestID: requestID, payload: payload)
  }

  static func chainHash(previousHash: [UInt8], seq: UInt64, timestampNs: UInt64, event: NewEvent) -> [UInt8] {
    var hasher = ChainHasher()
    return hasher.hash(previousHash: previousHash, seq: seq, timestampNs: timestampNs, event: event)
  }

  /// Checks the limits documented on ``NewEvent``.
  static func validate(_ e: NewEvent) throws {
    let t = e.type.utf8.count
    guard t >= 1 && t <= 255 else { throw EventLogError.invalid("event type must be 1-255 bytes, got \(t)") }
    guard !e.aggregate.kind.isEmpty else { throw EventLogError.invalid("aggregate kind must not be empty") }
    func check(_ name: @autoclosure () -> String, _ s: String) throws {
      if s.utf8.count > 65_535 { throw EventLogError.invalid("\(name()) exceeds 65535 bytes") }
    }
    try check("aggregate kind", e.aggregate.kind)
    try check("aggregate id", e.aggregate.id)
    try check("actor", e.actor)
    try check("request id", e.requestID)
    guard e.payload.count <= EventLog.maxPayloadBytes else {
      throw EventLogError.invalid("payload of \(e.payload.count) bytes exceeds \(EventLog.maxPayloadBytes)")
    }
  }
}

func hex32(_ v: UInt32) -> String {
  let s = String(v, radix: 16)
  return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
}

/// Computes chain hashes (``RecordFormat``) reusing one buffer for the fixed-size part of the input, so a
/// sequential reader or the writer allocates only the 32-byte result per record. The input is written with
/// raw stores and copies into that buffer (issue 14: generic `Array.append` here was ~4 % of a read).
struct ChainHasher {
  private var buf: [UInt8] = []

  mutating func hash(
    previousHash: [UInt8], seq: UInt64, timestampNs: UInt64, payloadVersion: UInt16, type: String,
    kind: String, id: String, actor: String, requestID: String, payload: UnsafeRawBufferPointer
  ) -> [UInt8] {
    var type = type
    var kind = kind
    var id = id
    var actor = actor
    var requestID = requestID
    // Contiguous UTF-8 for native strings: one copy each, no per-byte iteration.
    return type.withUTF8 { t in
      kind.withUTF8 { k in
        id.withUTF8 { i in
          actor.withUTF8 { a in
            requestID.withUTF8 { r in
              hash(
                previousHash: previousHash, seq: seq, timestampNs: timestampNs, payloadVersion: payloadVersion,
                type: UnsafeRawBufferPointer(t), kind: UnsafeRawBufferPointer(k), id: UnsafeRawBufferPointer(i),
                actor: UnsafeRawBufferPointer(a), requestID: UnsafeRawBufferPointer(r), payload: payload)
            }
          }
        }
      }
    }
  }

  /// The same hash from the header strings' UTF-8 bytes (a v2 body's slices: no strings needed).
  mutating func hash(
    previousHash: [UInt8], seq: UInt64, timestampNs: UInt64, payloadVersion: UInt16,
    type t: UnsafeRawBufferPointer, kind k: UnsafeRawBufferPointer, id i: UnsafeRawBufferPointer,
    actor a: UnsafeRawBufferPointer, requestID r: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer
  ) -> [UInt8] {
    let need = previousHash.count + 8 + 8 + 2 + 5 * 4 + t.count + k.count + i.count + a.count + r.count + 8
    if buf.count < need { buf = [UInt8](repeating: 0, count: max(need, 2 * buf.count, 512)) }
    return buf.withUnsafeMutableBytes { out -> [UInt8] in
      let base = out.baseAddress!
      var o = 0
      func put<T: FixedWidthInteger>(_ v: T) {
        base.storeBytes(of: v.bigEndian, toByteOffset: o, as: T.self)
        o += MemoryLayout<T>.size
      }
      func put(_ u: UnsafeRawBufferPointer) {
        put(UInt32(u.count))
        if let src = u.baseAddress, u.count > 0 { (base + o).copyMemory(from: src, byteCount: u.count) }
        o += u.count
      }
      previousHash.withUnsafeBytes { ph in
        if let src = ph.baseAddress, ph.count > 0 { base.copyMemory(from: src, byteCount: ph.count) }
      }
      o = previousHash.count
      put(seq)
      put(timestampNs)
      put(payloadVersion)
      put(t)
      put(k)
      put(i)
      put(a)
      put(r)
      put(UInt64(payload.count))
      // SHA-256 in C (`CLogHash`, SHA extensions when the CPU has them): no context allocation per record,
      // unlike swift-crypto's `SHA256` (issue 14: the chain hash was half of the writer's transaction time).
      let len = o
      return [UInt8](unsafeUninitializedCapacity: 32) { res, n in
        csha256(base, len, payload.baseAddress, payload.count, res.baseAddress!)
        n = 32
      }
    }
  }

  mutating func hash(previousHash: [UInt8], seq: UInt64, timestampNs: UInt64, event: NewEvent) -> [UInt8] {
    event.payload.withUnsafeBytes {
      hash(
        previousHash: previousHash, seq: seq, timestampNs: timestampNs, payloadVersion: event.payloadVersion,
        type: event.type, kind: event.aggregate.kind, id: event.aggregate.id, actor: event.actor,
        requestID: event.requestID, payload: $0)
    }
  }
}
