/// The fields 1…15 of one sub-message, scanned once for ``AuditFastSummary``: the last occurrence of each
/// singular string (ASCII only) and varint, and whether every declared field is well formed — repeated
/// strings ASCII, `map<string, string>` entries ASCII, `map<string, bytes>` keys ASCII. Nil when a declared
/// field has another wire type, a string is not ASCII, a map entry holds anything but one key and one value,
/// or the bytes are malformed (the caller then falls back to swift-protobuf). Fields not declared are
/// skipped as swift-protobuf keeps unknown fields aside; declare every string field of the message (rendered
/// or not) so that bytes the decoder would refuse as invalid UTF-8 are never rendered.
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
  /// Fields 1…15 seen at least once, and more than once (bit per field number).
  private var seen: UInt16 = 0
  private var seenTwice: UInt16 = 0

  /// - Parameters:
  ///   - strings: singular `string` fields (the last occurrence counts, as in swift-protobuf).
  ///   - repeated: `repeated string` fields.
  ///   - varints: integer and `bool` fields (wire type 0).
  ///   - bytes: `bytes` fields, and message fields the caller checks itself (``each(_:_:)``).
  ///   - maps: `map<string, string>` fields.
  ///   - byteMaps: `map<string, bytes>` fields.
  init?(
    _ body: UnsafeRawBufferPointer, strings: Set = [], repeated: Set = [], varints: Set = [], bytes: Set = [], maps: Set = [],
    byteMaps: Set = []
  ) {
    self.body = body
    var s = WireScanner(body)
    while !s.atEnd {
      guard let (field, wire) = s.tag() else { return nil }
      if field < 16 {
        let bit: UInt16 = 1 << field
        if seen & bit != 0 { seenTwice |= bit }
        seen |= bit
      }
      if strings.contains(field) || repeated.contains(field) {
        guard wire == 2, let b = s.lengthDelimited(), AuditFastSummary.isASCII(b) else { return nil }
        start[field] = s.offset - b.count
        count[field] = b.count
      } else if varints.contains(field) {
        guard wire == 0, let v = s.varint() else { return nil }
        values[field] = v
      } else if bytes.contains(field) {
        guard wire == 2, let b = s.lengthDelimited() else { return nil }
        start[field] = s.offset - b.count
        count[field] = b.count
      } else if maps.contains(field) || byteMaps.contains(field) {
        guard wire == 2, let b = s.lengthDelimited(), Self.mapEntry(b, asciiValue: maps.contains(field)) != nil else { return nil }
      } else {
        guard s.skip(wire) else { return nil }
      }
    }
  }

  /// The last value of singular string (or bytes) field `field` (empty if absent).
  func string(_ field: Int) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(rebasing: body[start[field]..<start[field] + count[field]])
  }

  /// The last value of varint field `field` (0 if absent).
  func varint(_ field: Int) -> UInt64 { values[field] }

  /// Whether field `field` occurs at all (a repeated field: is not empty).
  func has(_ field: Int) -> Bool { seen & (1 << field) != 0 }

  /// Whether field `field` occurs at most once (a message field seen twice is merged by
  /// swift-protobuf, which this does not reproduce).
  func once(_ field: Int) -> Bool { seenTwice & (1 << field) == 0 }

  /// Every element of repeated string field `field`, in order, separated by `separator`.
  func joined(_ field: Int, _ separator: StaticString, into out: inout [UInt8]) {
    var first = true
    _ = each(field) { b in
      if !first { out.put(separator) }
      out.put(b)
      first = false
      return true
    }
  }

  /// Calls `body` with each occurrence of length-delimited field `field`, in order; false as soon as
  /// `body` answers false.
  func each(_ field: Int, _ body: (UnsafeRawBufferPointer) -> Bool) -> Bool {
    var s = WireScanner(self.body)
    while !s.atEnd, let (f, wire) = s.tag() {
      if f == field, wire == 2, let b = s.lengthDelimited() {
        guard body(b) else { return false }
      } else if !s.skip(wire) {
        return false
      }
    }
    return true
  }

  /// The key and value of a map entry (field 1 and field 2, each at most once; absent = empty), the key
  /// ASCII and the value too when `asciiValue`; nil for anything else.
  static func mapEntry(_ b: UnsafeRawBufferPointer, asciiValue: Bool) -> (key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)? {
    var s = WireScanner(b)
    var key = UnsafeRawBufferPointer(start: nil, count: 0)
    var value = UnsafeRawBufferPointer(start: nil, count: 0)
    var seen = 0
    while !s.atEnd {
      guard let (field, wire) = s.tag(), wire == 2, field == 1 || field == 2, seen & (1 << field) == 0, let v = s.lengthDelimited()
      else { return nil }
      seen |= 1 << field
      if field == 1 {
        guard AuditFastSummary.isASCII(v) else { return nil }
        key = v
      } else {
        guard !asciiValue || AuditFastSummary.isASCII(v) else { return nil }
        value = v
      }
    }
    return (key, value)
  }
}

/// Up to 32 key–value pairs of byte slices sorted by key as Swift sorts ASCII `String`s (byte order, a
/// prefix first): map entries and repeated keys in the order ``LogTools/EventSummary`` prints them.
struct SortedEntries {
  static let capacity = 32
  private var keys = InlineArray<32, UnsafeRawBufferPointer>(repeating: UnsafeRawBufferPointer(start: nil, count: 0))
  private var values = InlineArray<32, UnsafeRawBufferPointer>(repeating: UnsafeRawBufferPointer(start: nil, count: 0))
  private(set) var count = 0

  /// Inserts one pair in key order (after equal keys); false when full.
  mutating func insert(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Bool {
    guard count < Self.capacity else { return false }
    var i = count
    while i > 0, Self.less(key, keys[i - 1]) {
      keys[i] = keys[i - 1]
      values[i] = values[i - 1]
      i -= 1
    }
    keys[i] = key
    values[i] = value
    count += 1
    return true
  }

  /// Whether two entries have the same key (a map that swift-protobuf would collapse to its last value).
  var hasDuplicateKeys: Bool {
    var i = 1
    while i < count {
      if !Self.less(keys[i - 1], keys[i]) { return true }
      i += 1
    }
    return false
  }

  func key(_ i: Int) -> UnsafeRawBufferPointer { keys[i] }
  func value(_ i: Int) -> UnsafeRawBufferPointer { values[i] }

  /// Byte-wise lexicographic order, a prefix before its extensions (Swift's `String` order on ASCII).
  static func less(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    let n = min(a.count, b.count)
    var i = 0
    while i < n {
      if a[i] != b[i] { return a[i] < b[i] }
      i += 1
    }
    return a.count < b.count
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
