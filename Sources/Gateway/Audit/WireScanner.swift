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

/// The fields 1…15 of one sub-message, scanned once: the last occurrence of each singular string (ASCII
/// only) and varint, and whether the repeated string fields are well formed. Nil when a named field has
/// another wire type, a string is not ASCII, or the bytes are malformed (the caller then falls back).
struct Fields {
  /// A set of field numbers 1…15.
  struct Set: ExpressibleByArrayLiteral {
    let bits: UInt16
    init(arrayLiteral fields: Int...) {
      var b: UInt16 = 0
      for f in fields { b |= 1 << f }
      bits = b
    }
    func contains(_ field: Int) -> Bool { field < 16 && bits & (1 << field) != 0 }
  }

  let body: UnsafeRawBufferPointer
  private var start = InlineArray<16, Int>(repeating: 0)
  private var count = InlineArray<16, Int>(repeating: 0)
  private var values = InlineArray<16, UInt64>(repeating: 0)
  private let repeated: Set

  init?(_ body: UnsafeRawBufferPointer, strings: Set, repeated: Set = [], varints: Set = []) {
    self.body = body
    self.repeated = repeated
    var s = WireScanner(body)
    while !s.atEnd {
      guard let (field, wire) = s.tag() else { return nil }
      if strings.contains(field) || repeated.contains(field) {
        guard wire == 2, let b = s.lengthDelimited(), AuditFastSummary.isASCII(b) else { return nil }
        start[field] = s.offset - b.count
        count[field] = b.count
      } else if varints.contains(field) {
        guard wire == 0, let v = s.varint() else { return nil }
        values[field] = v
      } else {
        guard s.skip(wire) else { return nil }
      }
    }
  }

  /// The last value of singular string field `field` (empty if absent).
  func string(_ field: Int) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(rebasing: body[start[field]..<start[field] + count[field]])
  }

  /// The last value of varint field `field` (0 if absent).
  func varint(_ field: Int) -> UInt64 { values[field] }

  /// Every element of repeated string field `field`, in order, separated by `separator`.
  func joined(_ field: Int, _ separator: StaticString, into out: inout [UInt8]) {
    var s = WireScanner(body)
    var first = true
    while !s.atEnd, let (f, wire) = s.tag() {
      if f == field, wire == 2, let b = s.lengthDelimited() {
        if !first { out.put(separator) }
        out.put(b)
        first = false
      } else if !s.skip(wire) {
        return
      }
    }
  }
}

extension [UInt8] {
  /// Appends the UTF-8 bytes of a literal.
  mutating func put(_ s: StaticString) {
    append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
  }

  mutating func put(_ b: UnsafeRawBufferPointer) { append(contentsOf: b) }

  /// Appends `v` in decimal, as `String(v)` writes it.
  mutating func put(decimal v: UInt64) {
    var digits = InlineArray<20, UInt8>(repeating: 0)
    var n = v
    var i = 20
    repeat {
      i -= 1
      digits[i] = UInt8(ascii: "0") + UInt8(n % 10)
      n /= 10
    } while n != 0
    for k in i..<20 { append(digits[k]) }
  }

  /// Appends `v` in decimal with a leading "-" when negative, as `String(v)` writes it.
  mutating func put(signed v: Int64) {
    if v < 0 { append(UInt8(ascii: "-")) }
    put(decimal: v.magnitude)
  }
}
