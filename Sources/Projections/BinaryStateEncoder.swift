import Foundation

/// One value being encoded (``BinaryStateEncoding``): a scalar, an array or a map of further slots.
/// Containers hand out child slots and fill them later, hence a reference type.
final class Slot {
  var scalar: BinaryNode?
  var array: [Slot]?
  var map: [String: Slot]?

  /// Appends the tag and payload of this slot; map keys are sorted and added to the key table on first use.
  func serialize(into out: inout [UInt8], keys: inout [String: Int], table: inout [UInt8]) {
    if let map {
      out.append(0x09)
      Varint.append(UInt64(map.count), to: &out)
      for key in map.keys.sorted() {
        let index: Int
        if let known = keys[key] {
          index = known
        } else {
          index = keys.count
          keys[key] = index
          let utf8 = Array(key.utf8)
          Varint.append(UInt64(utf8.count), to: &table)
          table += utf8
        }
        Varint.append(UInt64(index), to: &out)
        map[key]!.serialize(into: &out, keys: &keys, table: &table)
      }
    } else if let array {
      out.append(0x08)
      Varint.append(UInt64(array.count), to: &out)
      for item in array { item.serialize(into: &out, keys: &keys, table: &table) }
    } else {
      switch scalar ?? .null {
      case .null: out.append(0x00)
      case .bool(let b): out.append(b ? 0x02 : 0x01)
      case .unsigned(let v): out.append(0x03); Varint.append(v, to: &out)
      case .signed(let v): out.append(0x04); Varint.append(Varint.zigzag(v), to: &out)
      case .double(let d):
        out.append(0x05)
        let bits = d.bitPattern
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
      case .float(let f):
        out.append(0x0A)
        let bits = f.bitPattern
        for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: bits >> UInt32(shift))) }
      case .string(let s):
        out.append(0x06)
        let utf8 = Array(s.utf8)
        Varint.append(UInt64(utf8.count), to: &out)
        out += utf8
      case .bytes(let b):
        out.append(0x07)
        Varint.append(UInt64(b.count), to: &out)
        out += b
      case .array, .map: out.append(0x00)  // never stored as scalars
      }
    }
  }
}

/// The `Encoder` of ``BinaryStateEncoding``.
struct Writer: Encoder {
  let slot: Slot
  var codingPath: [any CodingKey]
  var userInfo: [CodingUserInfoKey: Any] { [:] }

  /// Encodes `value` into `slot`; `Data` and `[UInt8]` become one bytes value.
  static func encode<T: Encodable>(_ value: T, into slot: Slot, path: [any CodingKey]) throws {
    // By type, not by cast: an empty array of any element type casts to [UInt8].
    if T.self == Data.self, let data = value as? Data {
      slot.scalar = .bytes(Array(data))
    } else if T.self == [UInt8].self, let bytes = value as? [UInt8] {
      slot.scalar = .bytes(bytes)
    } else {
      try value.encode(to: Writer(slot: slot, codingPath: path))
    }
  }

  func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
    if slot.map == nil { slot.map = [:] }
    return KeyedEncodingContainer(KeyedWriter<Key>(slot: slot, codingPath: codingPath))
  }

  func unkeyedContainer() -> any UnkeyedEncodingContainer {
    if slot.array == nil { slot.array = [] }
    return UnkeyedWriter(slot: slot, codingPath: codingPath)
  }

  func singleValueContainer() -> any SingleValueEncodingContainer { SingleWriter(slot: slot, codingPath: codingPath) }
}

/// Scalars of every encoding container, as ``BinaryNode``s.
enum Scalar {
  static func signed<I: FixedWidthInteger & SignedInteger>(_ v: I) -> BinaryNode { .signed(Int64(v)) }
  static func unsigned<I: FixedWidthInteger & UnsignedInteger>(_ v: I) -> BinaryNode { .unsigned(UInt64(v)) }
}

struct KeyedWriter<Key: CodingKey>: KeyedEncodingContainerProtocol {
  let slot: Slot
  var codingPath: [any CodingKey]

  private func child(_ key: Key) -> Slot {
    let s = Slot()
    slot.map![key.stringValue] = s
    return s
  }

  mutating func encodeNil(forKey key: Key) throws { child(key).scalar = .null }
  mutating func encode(_ value: Bool, forKey key: Key) throws { child(key).scalar = .bool(value) }
  mutating func encode(_ value: String, forKey key: Key) throws { child(key).scalar = .string(value) }
  mutating func encode(_ value: Double, forKey key: Key) throws { child(key).scalar = .double(value) }
  mutating func encode(_ value: Float, forKey key: Key) throws { child(key).scalar = .float(value) }
  mutating func encode(_ value: Int, forKey key: Key) throws { child(key).scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int8, forKey key: Key) throws { child(key).scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int16, forKey key: Key) throws { child(key).scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int32, forKey key: Key) throws { child(key).scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int64, forKey key: Key) throws { child(key).scalar = Scalar.signed(value) }
  mutating func encode(_ value: UInt, forKey key: Key) throws { child(key).scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt8, forKey key: Key) throws { child(key).scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt16, forKey key: Key) throws { child(key).scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt32, forKey key: Key) throws { child(key).scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt64, forKey key: Key) throws { child(key).scalar = Scalar.unsigned(value) }
  mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
    try Writer.encode(value, into: child(key), path: codingPath + [key])
  }

  mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
    Writer(slot: child(key), codingPath: codingPath + [key]).container(keyedBy: keyType)
  }
  mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
    Writer(slot: child(key), codingPath: codingPath + [key]).unkeyedContainer()
  }
  mutating func superEncoder() -> any Encoder { Writer(slot: child(Key(stringValue: "super")!), codingPath: codingPath) }
  mutating func superEncoder(forKey key: Key) -> any Encoder { Writer(slot: child(key), codingPath: codingPath + [key]) }
}

struct UnkeyedWriter: UnkeyedEncodingContainer {
  let slot: Slot
  var codingPath: [any CodingKey]
  var count: Int { slot.array!.count }

  private func next() -> Slot {
    let s = Slot()
    slot.array!.append(s)
    return s
  }

  mutating func encodeNil() throws { next().scalar = .null }
  mutating func encode(_ value: Bool) throws { next().scalar = .bool(value) }
  mutating func encode(_ value: String) throws { next().scalar = .string(value) }
  mutating func encode(_ value: Double) throws { next().scalar = .double(value) }
  mutating func encode(_ value: Float) throws { next().scalar = .float(value) }
  mutating func encode(_ value: Int) throws { next().scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int8) throws { next().scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int16) throws { next().scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int32) throws { next().scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int64) throws { next().scalar = Scalar.signed(value) }
  mutating func encode(_ value: UInt) throws { next().scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt8) throws { next().scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt16) throws { next().scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt32) throws { next().scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt64) throws { next().scalar = Scalar.unsigned(value) }
  mutating func encode<T: Encodable>(_ value: T) throws {
    try Writer.encode(value, into: next(), path: codingPath)
  }
  mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
    Writer(slot: next(), codingPath: codingPath).container(keyedBy: keyType)
  }
  mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer { Writer(slot: next(), codingPath: codingPath).unkeyedContainer() }
  mutating func superEncoder() -> any Encoder { Writer(slot: next(), codingPath: codingPath) }
}

struct SingleWriter: SingleValueEncodingContainer {
  let slot: Slot
  var codingPath: [any CodingKey]

  mutating func encodeNil() throws { slot.scalar = .null }
  mutating func encode(_ value: Bool) throws { slot.scalar = .bool(value) }
  mutating func encode(_ value: String) throws { slot.scalar = .string(value) }
  mutating func encode(_ value: Double) throws { slot.scalar = .double(value) }
  mutating func encode(_ value: Float) throws { slot.scalar = .float(value) }
  mutating func encode(_ value: Int) throws { slot.scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int8) throws { slot.scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int16) throws { slot.scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int32) throws { slot.scalar = Scalar.signed(value) }
  mutating func encode(_ value: Int64) throws { slot.scalar = Scalar.signed(value) }
  mutating func encode(_ value: UInt) throws { slot.scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt8) throws { slot.scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt16) throws { slot.scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt32) throws { slot.scalar = Scalar.unsigned(value) }
  mutating func encode(_ value: UInt64) throws { slot.scalar = Scalar.unsigned(value) }
  mutating func encode<T: Encodable>(_ value: T) throws { try Writer.encode(value, into: slot, path: codingPath) }
}
