/// Reuses one `String` per distinct short header string (event type, aggregate kind, actor) across the
/// records of one read, so decoding a record does not allocate a new string for values that repeat in
/// almost every record (issue 14: replay without per-event allocation).
///
/// A direct-mapped table of 256 slots keyed by an FNV-1a hash of the bytes; a hit is confirmed by comparing
/// the bytes with the cached string's UTF-8, so the result always equals `String(validating: bytes)`. Values
/// longer than ``maxLength`` bytes (ids, request ids: unique per record) bypass the table. One thread at a
/// time.
final class StringInterner {
  /// Longest value kept in the table, in bytes.
  static let maxLength = 64
  private var slots = [(hash: UInt64, value: String)?](repeating: nil, count: 256)

  /// The string whose UTF-8 is `bytes`, or nil if `bytes` is not valid UTF-8.
  func string(_ bytes: UnsafeRawBufferPointer) -> String? {
    guard bytes.count <= Self.maxLength, bytes.count > 0 else {
      return String(validating: bytes, as: UTF8.self)
    }
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    let i = Int(truncatingIfNeeded: h & 0xFF)
    if let s = slots[i], s.hash == h {
      var v = s.value
      let same = v.withUTF8 { u in u.count == bytes.count && memcmpEqual(u.baseAddress!, bytes.baseAddress!, u.count) }
      if same { return v }
    }
    guard let v = String(validating: bytes, as: UTF8.self) else { return nil }
    slots[i] = (h, v)
    return v
  }
}

@inline(__always)
private func memcmpEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
  let b = b.assumingMemoryBound(to: UInt8.self)
  for k in 0..<n where a[k] != b[k] { return false }
  return true
}
