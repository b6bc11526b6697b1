#if canImport(Glibc)
  import Glibc
#endif

/// Reuses one `String` per distinct short header string (event type, aggregate kind, actor) across the
/// records of one read, so decoding a record does not allocate a new string for values that repeat in
/// almost every record (issue 14: replay without per-event allocation).
///
/// A direct-mapped table of 256 slots keyed by a multiply-xor hash of the bytes; a hit is confirmed by comparing
/// the bytes with the cached string's UTF-8, so the result always equals `String(validating: bytes)`. Values
/// longer than ``maxLength`` bytes (ids, request ids: unique per record) bypass the table. One thread at a
/// time.
final class StringInterner {
  /// Longest value kept in the table, in bytes.
  static let maxLength = 64
  /// Touched only by the one thread decoding with this interner, so without dynamic exclusivity checks
  /// (issue 14: they were ~2 % of a sequential read).
  @exclusivity(unchecked) private var slots = [(hash: UInt64, value: String)?](repeating: nil, count: 256)

  /// The string whose UTF-8 is `bytes`, or nil if `bytes` is not valid UTF-8.
  func string(_ bytes: UnsafeRawBufferPointer) -> String? {
    let n = bytes.count
    guard n <= Self.maxLength, n > 0, let p = bytes.baseAddress else { return utf8String(bytes) }
    // Multiply-xor over 8-byte words (unaligned loads), not a byte-by-byte FNV loop (issue 14: the byte loop
    // was ~4 % of a sequential read). A hit is confirmed by comparing the bytes, so the hash only has to spread.
    var h = UInt64(truncatingIfNeeded: n) &* 0x9E37_79B9_7F4A_7C15
    var i = 0
    while i + 8 <= n {
      h = (h ^ p.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x0000_0100_0000_01B3
      h ^= h >> 29
      i += 8
    }
    var tail: UInt64 = 0
    var shift: UInt64 = 0
    while i < n {
      tail |= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << shift
      shift += 8
      i += 1
    }
    h = (h ^ tail) &* 0x9E37_79B9_7F4A_7C15
    h ^= h >> 32
    let slot = Int(truncatingIfNeeded: h & 0xFF)
    if let s = slots[slot], s.hash == h {
      var v = s.value
      let same = v.withUTF8 { u in u.count == n && memcmp(u.baseAddress!, p, n) == 0 }
      if same { return v }
    }
    guard let v = utf8String(bytes) else { return nil }
    slots[slot] = (h, v)
    return v
  }
}
