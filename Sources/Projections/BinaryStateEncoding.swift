import Foundation

/// A compact, deterministic binary encoding for `Codable` values: the snapshot format of `GatewayState`
/// (``SnapshotCodec``; issue 16: snapshots were JSON).
///
/// Layout (varints are unsigned LEB128, as protobuf's; integers in fixed fields big-endian):
/// ```
/// "OSB1"                          4 bytes magic
/// K                               varint: number of key strings
/// K × (len varint, UTF-8 bytes)   the key table: every map key once, in first-use order
/// value                           the root value
///
/// value := tag (1 byte) payload
///   0x00 nil        —
///   0x01 false      —
///   0x02 true       —
///   0x03 unsigned   varint
///   0x04 signed     zigzag varint (protobuf's sint64)
///   0x05 double     8 bytes, IEEE 754 bit pattern
///   0x06 string     len varint, UTF-8 bytes
///   0x07 bytes      len varint, bytes (`Data`, `[UInt8]`)
///   0x08 array      count varint, count × value
///   0x09 map        count varint, count × (key-table index varint, value), keys in ascending
///                   code-unit order, so the bytes are a pure function of the value (as sorted-key JSON was)
///   0x0A float      4 bytes, IEEE 754 bit pattern
/// ```
/// A keyed container (struct, `[String: V]`) is a map; an optional that is nil is left out of its map
/// (`encodeIfPresent`). Compared with sorted-key JSON it writes each key name once, numbers as varints and
/// data as raw bytes instead of base64.
public enum BinaryStateEncoding {
  static let magic: [UInt8] = Array("OSB1".utf8)

  /// Whether `bytes` start with this format's magic.
  public static func isBinary(_ bytes: [UInt8]) -> Bool { bytes.starts(with: magic) }

  /// - Throws: `EncodingError` only if `value`'s own `encode(to:)` throws.
  public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
    let root = Slot()
    try Writer.encode(value, into: root, path: [])
    var keys: [String: Int] = [:]
    var table: [UInt8] = []
    var body: [UInt8] = []
    root.serialize(into: &body, keys: &keys, table: &table)
    var out = magic
    out.reserveCapacity(magic.count + table.count + body.count + 8)
    Varint.append(UInt64(keys.count), to: &out)
    out += table
    out += body
    return out
  }

  /// - Throws: `DecodingError` when the bytes are not this format or do not hold a `T`.
  public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
    guard isBinary(bytes) else {
      throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "not an OSB1 binary state"))
    }
    var reader = Reader(bytes: bytes, offset: magic.count)
    let count = try reader.varint()
    guard count <= UInt64(bytes.count) else { throw reader.corrupt("key table count \(count)") }
    var keys: [String] = []
    keys.reserveCapacity(Int(count))
    for _ in 0..<count { keys.append(try reader.string()) }
    reader.keys = keys
    let node = try reader.value(depth: 0)
    guard reader.offset == bytes.count else { throw reader.corrupt("\(bytes.count - reader.offset) trailing bytes") }
    return try NodeDecoder.decode(type, from: node, path: [])
  }
}

/// A decoded value.
indirect enum BinaryNode {
  case null
  case bool(Bool)
  case unsigned(UInt64)
  case signed(Int64)
  case double(Double)
  case float(Float)
  case string(String)
  case bytes([UInt8])
  case array([BinaryNode])
  case map([String: BinaryNode])
}

enum Varint {
  static func append(_ v: UInt64, to out: inout [UInt8]) {
    var v = v
    while v >= 0x80 {
      out.append(UInt8(truncatingIfNeeded: v) | 0x80)
      v >>= 7
    }
    out.append(UInt8(v))
  }

  static func zigzag(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }
  static func unzigzag(_ v: UInt64) -> Int64 { Int64(bitPattern: v >> 1) ^ -Int64(bitPattern: v & 1) }
}

/// The parser of ``BinaryStateEncoding``'s bytes into ``BinaryNode``s; every length is bounds-checked.
struct Reader {
  let bytes: [UInt8]
  var offset: Int
  var keys: [String] = []

  func corrupt(_ what: String) -> DecodingError {
    .dataCorrupted(.init(codingPath: [], debugDescription: "OSB1 binary state: \(what) at byte \(offset)"))
  }

  mutating func byte() throws -> UInt8 {
    guard offset < bytes.count else { throw corrupt("unexpected end") }
    defer { offset += 1 }
    return bytes[offset]
  }

  mutating func varint() throws -> UInt64 {
    var result: UInt64 = 0
    var shift: UInt64 = 0
    while true {
      let b = try byte()
      guard shift < 64 else { throw corrupt("varint too long") }
      result |= UInt64(b & 0x7F) << shift
      if b < 0x80 { return result }
      shift += 7
    }
  }

  mutating func length() throws -> Int {
    let n = try varint()
    guard n <= UInt64(bytes.count - offset) else { throw corrupt("length \(n) beyond the end") }
    return Int(n)
  }

  mutating func raw(_ n: Int) throws -> ArraySlice<UInt8> {
    guard n <= bytes.count - offset else { throw corrupt("length \(n) beyond the end") }
    defer { offset += n }
    return bytes[offset..<offset + n]
  }

  mutating func string() throws -> String {
    let slice = try raw(try length())
    guard let s = String(validating: slice, as: UTF8.self) else { throw corrupt("invalid UTF-8") }
    return s
  }

  mutating func fixed(_ n: Int) throws -> UInt64 {
    try raw(n).reduce(0) { $0 << 8 | UInt64($1) }
  }

  mutating func value(depth: Int) throws -> BinaryNode {
    guard depth < 256 else { throw corrupt("nesting deeper than 256") }
    switch try byte() {
    case 0x00: return .null
    case 0x01: return .bool(false)
    case 0x02: return .bool(true)
    case 0x03: return .unsigned(try varint())
    case 0x04: return .signed(Varint.unzigzag(try varint()))
    case 0x05: return .double(Double(bitPattern: try fixed(8)))
    case 0x06: return .string(try string())
    case 0x07: return .bytes(Array(try raw(try length())))
    case 0x08:
      let n = try length()
      var items: [BinaryNode] = []
      items.reserveCapacity(n)
      for _ in 0..<n { items.append(try value(depth: depth + 1)) }
      return .array(items)
    case 0x09:
      let n = try length()
      var map: [String: BinaryNode] = [:]
      map.reserveCapacity(n)
      for _ in 0..<n {
        let index = try varint()
        guard index < UInt64(keys.count) else { throw corrupt("key index \(index) outside the table") }
        map[keys[Int(index)]] = try value(depth: depth + 1)
      }
      return .map(map)
    case 0x0A: return .float(Float(bitPattern: UInt32(try fixed(4))))
    case let tag: throw corrupt("unknown tag \(tag)")
    }
  }
}
