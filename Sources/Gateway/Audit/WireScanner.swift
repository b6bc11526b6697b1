/// A reader of protobuf wire bytes, field by field, for ``AuditFastSummary`` (and the loadgen's seq-only
/// watch client): tags, varints and length-delimited slices of the buffer (no copies). Every method answers
/// nil on malformed or truncated bytes instead of throwing: the caller then decodes the payload with
/// swift-protobuf, which reports it.
package struct WireScanner {
  package let bytes: UnsafeRawBufferPointer
  package private(set) var offset = 0

  package init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

  package var atEnd: Bool { offset >= bytes.count }

  /// The next field's number and wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32; groups, 3
  /// and 4, are answered too and left to the caller to refuse). Nil for field number 0 or one above 2^29 − 1.
  package mutating func tag() -> (field: Int, wire: Int)? {
    guard let t = varint(), t >> 3 != 0, t >> 3 < 1 << 29 else { return nil }
    return (Int(t >> 3), Int(t & 7))
  }

  /// A base-128 varint of at most ten bytes; nil when truncated, longer, or over 64 bits (a tenth byte
  /// above 1), as swift-protobuf refuses it.
  package mutating func varint() -> UInt64? {
    var value: UInt64 = 0
    var shift: UInt64 = 0
    while offset < bytes.count, shift < 64 {
      let b = bytes[offset]
      offset += 1
      if shift == 63, b > 1 { return nil }
      value |= UInt64(b & 0x7F) << shift
      if b < 0x80 { return value }
      shift += 7
    }
    return nil
  }

  /// A length-delimited field's bytes (a slice of ``bytes``).
  package mutating func lengthDelimited() -> UnsafeRawBufferPointer? {
    guard let n = varint(), n <= UInt64(bytes.count - offset) else { return nil }
    let s = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + Int(n)])
    offset += Int(n)
    return s
  }

  /// Skips a field of wire type `wire` (not a group); false if it cannot.
  mutating func skip(_ wire: Int) -> Bool {
    switch wire {
    case 0: return varint() != nil
    case 1: return advance(8)
    case 2: return lengthDelimited() != nil
    case 5: return advance(4)
    default: return false
    }
  }

  private mutating func advance(_ n: Int) -> Bool {
    guard bytes.count - offset >= n else { return false }
    offset += n
    return true
  }
}
