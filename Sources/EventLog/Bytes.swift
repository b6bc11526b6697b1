// Big-endian integer encoding/decoding with bounds checks, and CRC-32C.

import CLogHash

extension Array where Element == UInt8 {
  mutating func appendBE(_ v: UInt64) {
    Swift.withUnsafeBytes(of: v.bigEndian) { append(contentsOf: $0) }
  }
  mutating func appendBE(_ v: UInt32) {
    Swift.withUnsafeBytes(of: v.bigEndian) { append(contentsOf: $0) }
  }
  /// Appends `v` as an unsigned LEB128 varint (7 bits per byte, low group first, high bit = more follow).
  mutating func appendVarint(_ v: UInt64) {
    var v = v
    while v >= 0x80 {
      append(UInt8(truncatingIfNeeded: v) | 0x80)
      v >>= 7
    }
    append(UInt8(v))
  }
  mutating func appendBE(_ v: UInt16) {
    append(UInt8(truncatingIfNeeded: v >> 8))
    append(UInt8(truncatingIfNeeded: v))
  }
}

/// An 8-byte big-endian key for `seq` (so LMDB's default memcmp order is numeric order).
func seqKey(_ seq: UInt64) -> [UInt8] {
  var k = [UInt8]()
  k.reserveCapacity(8)
  k.appendBE(seq)
  return k
}

/// A bounds-checked big-endian reader over raw bytes. Every read returns nil past the end: stored data is
/// never trusted. Public for the projections' envelope split (protobuf varints and length-delimited fields).
public struct ByteReader {
  /// The bytes read.
  public let buf: UnsafeRawBufferPointer
  /// The next byte's index in `buf`.
  public var offset: Int = 0

  /// A reader of `buf` from `offset` on.
  @inlinable
  public init(_ buf: UnsafeRawBufferPointer, offset: Int = 0) {
    self.buf = buf
    self.offset = offset
  }

  /// Bytes left after `offset`.
  @inlinable public var remaining: Int { buf.count - offset }

  mutating func u8() -> UInt8? {
    guard remaining >= 1 else { return nil }
    defer { offset += 1 }
    return buf[offset]
  }
  mutating func u16() -> UInt16? {
    guard remaining >= 2 else { return nil }
    defer { offset += 2 }
    return UInt16(buf[offset]) << 8 | UInt16(buf[offset + 1])
  }
  mutating func u32() -> UInt32? {
    guard remaining >= 4 else { return nil }
    var v: UInt32 = 0
    for i in 0..<4 { v = v << 8 | UInt32(buf[offset + i]) }
    offset += 4
    return v
  }
  mutating func u64() -> UInt64? {
    guard remaining >= 8 else { return nil }
    var v: UInt64 = 0
    for i in 0..<8 { v = v << 8 | UInt64(buf[offset + i]) }
    offset += 8
    return v
  }
  /// The next `n` bytes; nil past the end or for a negative `n`.
  @inlinable public mutating func bytes(_ n: Int) -> UnsafeRawBufferPointer? {
    guard n >= 0, remaining >= n else { return nil }
    defer { offset += n }
    return UnsafeRawBufferPointer(rebasing: buf[offset..<(offset + n)])
  }
  /// An unsigned LEB128 varint of at most 10 bytes; nil past the end or if it overflows 64 bits.
  @inlinable public mutating func varint() -> UInt64? {
    var v: UInt64 = 0
    var shift: UInt64 = 0
    while offset < buf.count {
      let b = buf[offset]
      offset += 1
      if shift == 63 && b > 1 { return nil }
      v |= UInt64(b & 0x7F) << shift
      if b & 0x80 == 0 { return v }
      shift += 7
      if shift > 63 { return nil }
    }
    return nil
  }
  mutating func string(_ n: Int) -> String? {
    guard let b = bytes(n) else { return nil }
    return utf8String(b)
  }
}

/// The string whose UTF-8 is `b`, or nil if `b` is not valid UTF-8: exactly `String(validating: b, as:
/// UTF8.self)`, but ASCII (every header string the gateway writes: ids, request ids, types) takes a path
/// without the generic validator, which looked up generic metadata per call and was ~10 % of a sequential
/// read (issue 14, perf profile).
@inline(__always)
func utf8String(_ b: UnsafeRawBufferPointer) -> String? {
  guard isASCII(b) else { return String(validating: b, as: UTF8.self) }
  return String(unsafeUninitializedCapacity: b.count) { dst in
    if let src = b.baseAddress, !b.isEmpty { UnsafeMutableRawPointer(dst.baseAddress!).copyMemory(from: src, byteCount: b.count) }
    return b.count
  }
}

/// True if every byte of `b` is below 0x80 (8 bytes per step).
@inline(__always)
func isASCII(_ b: UnsafeRawBufferPointer) -> Bool {
  guard let p = b.baseAddress else { return true }
  let n = b.count
  var i = 0
  var acc: UInt64 = 0
  while i + 8 <= n {
    acc |= p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
    i += 8
  }
  while i < n {
    acc |= UInt64(p.load(fromByteOffset: i, as: UInt8.self))
    i += 1
  }
  return acc & 0x8080_8080_8080_8080 == 0
}

/// Decodes an 8-byte big-endian value; nil for any other length.
func decodeBE64(_ b: UnsafeRawBufferPointer) -> UInt64? {
  guard b.count == 8 else { return nil }
  var r = ByteReader(b)
  return r.u64()
}

func decodeBE64(_ b: [UInt8]) -> UInt64? { b.withUnsafeBytes { decodeBE64($0) } }

func decodeBE32(_ b: [UInt8]) -> UInt32? {
  guard b.count == 4 else { return nil }
  return b.withUnsafeBytes {
    var r = ByteReader($0); return r.u32()
  }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI, ext4 and etcd's WAL.
/// Check value: crc32c("123456789") == 0xE3069283.
///
/// On x86-64 CPUs with SSE4.2 the `crc32` instruction computes it (C target `CLogHash`, 8 bytes per
/// instruction; the CPU is checked with cpuid once). Elsewhere: slicing-by-8 (8 table lookups per 8 input
/// bytes; Intel's "slicing-by-8" of Kounavis and Berry), about 4× fewer instructions per byte than the
/// byte-wise table (issue 14: the checksum of every record read and written).
enum CRC32C {
  /// `tables[k * 256 + b]`: the CRC of byte `b` followed by `k` zero bytes (k = 0...7).
  static let tables: [UInt32] = {
    var t = [UInt32](repeating: 0, count: 8 * 256)
    for i in 0..<256 {
      var c = UInt32(i)
      for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
      t[i] = c
    }
    for k in 1..<8 {
      for i in 0..<256 {
        let prev = t[(k - 1) * 256 + i]
        t[k * 256 + i] = t[Int(prev & 0xFF)] ^ (prev >> 8)
      }
    }
    return t
  }()

  static func checksum(_ buf: UnsafeRawBufferPointer) -> UInt32 { checksum(buf, continuing: 0) }

  /// Whether the SSE4.2 `crc32` instruction is used (CPU checked once with cpuid, C target `CLogHash`);
  /// otherwise the slicing-by-8 tables below. Both give identical results (EventLogTests.CRCTests).
  static let hardware = ccrc32c_available() != 0

  /// The checksum of `previous`'s input followed by `buf` (`continuing: 0` starts afresh).
  static func checksum(_ buf: UnsafeRawBufferPointer, continuing previous: UInt32) -> UInt32 {
    hardware ? ~hardwareUpdate(~previous, buf) : softwareChecksum(buf, continuing: previous)
  }

  /// ``checksum(_:continuing:)`` with the slicing-by-8 tables, whatever the CPU.
  static func softwareChecksum(_ buf: UnsafeRawBufferPointer, continuing previous: UInt32 = 0) -> UInt32 {
    tables.withUnsafeBufferPointer { t in
      ~update(~previous, buf, t.baseAddress!)
    }
  }

  @inline(__always)
  private static func hardwareUpdate(_ crc: UInt32, _ buf: UnsafeRawBufferPointer) -> UInt32 {
    guard let base = buf.baseAddress, !buf.isEmpty else { return crc }
    return ccrc32c_update(crc, base, buf.count)
  }

  /// Runs the register `crc` (not inverted) over `buf`.
  @inline(__always)
  static func update(_ crc: UInt32, _ buf: UnsafeRawBufferPointer, _ t: UnsafePointer<UInt32>) -> UInt32 {
    var crc = crc
    guard let base = buf.baseAddress else { return crc }
    let n = buf.count
    var i = 0
    while i + 8 <= n {
      let w = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self)) ^ UInt64(crc)
      let lo = UInt32(truncatingIfNeeded: w)
      let hi = UInt32(truncatingIfNeeded: w >> 32)
      crc =
        t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
        ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
        ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
        ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
      i += 8
    }
    while i < n {
      crc = t[Int((crc ^ UInt32(base.load(fromByteOffset: i, as: UInt8.self))) & 0xFF)] ^ (crc >> 8)
      i += 1
    }
    return crc
  }

  /// CRC-32C of the 8-byte big-endian `key` followed by `buf` (v2 and v3 records, chain checkpoints).
  static func checksum(key: UInt64, _ buf: UnsafeRawBufferPointer) -> UInt32 {
    var k = key.bigEndian
    if hardware {
      return withUnsafeBytes(of: &k) { kb in ~hardwareUpdate(hardwareUpdate(0xFFFF_FFFF, kb), buf) }
    }
    return tables.withUnsafeBufferPointer { t in
      withUnsafeBytes(of: &k) { kb in ~update(update(0xFFFF_FFFF, kb, t.baseAddress!), buf, t.baseAddress!) }
    }
  }

  static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { checksum($0) } }
}
