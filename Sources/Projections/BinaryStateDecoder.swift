import Foundation

/// The `Decoder` of ``BinaryStateEncoding``, over parsed ``BinaryNode``s. Integers are range-checked into
/// the requested type; a missing key is `keyNotFound`, a wrong kind `typeMismatch`.
struct NodeDecoder: Decoder {
  let node: BinaryNode
  var codingPath: [any CodingKey]
  var userInfo: [CodingUserInfoKey: Any] { [:] }

  static func decode<T: Decodable>(_ type: T.Type, from node: BinaryNode, path: [any CodingKey]) throws -> T {
    if type == Data.self || type == [UInt8].self {
      guard case .bytes(let b) = node else { throw mismatch(type, node, path) }
      return (type == Data.self ? Data(b) as Any : b as Any) as! T
    }
    if let map = type as? any StringKeyedMap.Type {
      guard case .map(let m) = node else { throw mismatch(type, node, path) }
      return try map.decodeValues(m, path: path) as! T
    }
    return try T(from: NodeDecoder(node: node, codingPath: path))
  }

  static func mismatch(_ type: Any.Type, _ node: BinaryNode, _ path: [any CodingKey]) -> DecodingError {
    .typeMismatch(type, .init(codingPath: path, debugDescription: "expected \(type), found \(node.kind)"))
  }

  func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
    guard case .map(let map) = node else { throw Self.mismatch([String: Any].self, node, codingPath) }
    return KeyedDecodingContainer(KeyedReader<Key>(map: map, codingPath: codingPath))
  }

  func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
    guard case .array(let items) = node else { throw Self.mismatch([Any].self, node, codingPath) }
    return UnkeyedReader(items: items, codingPath: codingPath)
  }

  func singleValueContainer() throws -> any SingleValueDecodingContainer { SingleReader(node: node, codingPath: codingPath) }
}

extension BinaryNode {
  var kind: String {
    switch self {
    case .null: "nil"
    case .bool: "bool"
    case .unsigned: "unsigned integer"
    case .signed: "signed integer"
    case .double: "double"
    case .float: "float"
    case .string: "string"
    case .bytes: "bytes"
    case .array: "array"
    case .map: "map"
    }
  }

  /// The value as `T`: the scalar of the matching kind, integers converted exactly or refused.
  func scalar<T>(_ type: T.Type, _ path: [any CodingKey]) throws -> T {
    switch (self, type) {
    case (.bool(let b), is Bool.Type): return b as! T
    case (.string(let s), is String.Type): return s as! T
    case (.double(let d), is Double.Type): return d as! T
    case (.float(let f), is Float.Type): return f as! T
    case (.float(let f), is Double.Type): return Double(f) as! T
    default: throw NodeDecoder.mismatch(type, self, path)
    }
  }

  func integer<I: FixedWidthInteger>(_ type: I.Type, _ path: [any CodingKey]) throws -> I {
    let converted: I?
    switch self {
    case .signed(let v): converted = I(exactly: v)
    case .unsigned(let v): converted = I(exactly: v)
    default: throw NodeDecoder.mismatch(type, self, path)
    }
    guard let converted else {
      throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "\(self) does not fit \(type)"))
    }
    return converted
  }
}

struct KeyedReader<Key: CodingKey>: KeyedDecodingContainerProtocol {
  let map: [String: BinaryNode]
  var codingPath: [any CodingKey]
  var allKeys: [Key] { map.keys.compactMap { Key(stringValue: $0) } }

  func contains(_ key: Key) -> Bool { map[key.stringValue] != nil }

  private func node(_ key: Key) throws -> BinaryNode {
    guard let n = map[key.stringValue] else {
      throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no value for \(key.stringValue)"))
    }
    return n
  }

  func decodeNil(forKey key: Key) throws -> Bool {
    if case .null = try node(key) { return true }
    return false
  }
  func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try node(key).scalar(type, codingPath + [key]) }
  func decode(_ type: String.Type, forKey key: Key) throws -> String { try node(key).scalar(type, codingPath + [key]) }
  func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try node(key).scalar(type, codingPath + [key]) }
  func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try node(key).scalar(type, codingPath + [key]) }
  func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try node(key).integer(type, codingPath + [key]) }
  func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try node(key).integer(type, codingPath + [key]) }
  func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try node(key).integer(type, codingPath + [key]) }
  func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try node(key).integer(type, codingPath + [key]) }
  func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try node(key).integer(type, codingPath + [key]) }
  func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try node(key).integer(type, codingPath + [key]) }
  func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try node(key).integer(type, codingPath + [key]) }
  func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try node(key).integer(type, codingPath + [key]) }
  func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try node(key).integer(type, codingPath + [key]) }
  func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try node(key).integer(type, codingPath + [key]) }
  func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
    try NodeDecoder.decode(type, from: node(key), path: codingPath + [key])
  }

  func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
    try NodeDecoder(node: node(key), codingPath: codingPath + [key]).container(keyedBy: type)
  }
  func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
    try NodeDecoder(node: node(key), codingPath: codingPath + [key]).unkeyedContainer()
  }
  func superDecoder() throws -> any Decoder { NodeDecoder(node: map["super"] ?? .null, codingPath: codingPath) }
  func superDecoder(forKey key: Key) throws -> any Decoder { NodeDecoder(node: try node(key), codingPath: codingPath + [key]) }
}

struct UnkeyedReader: UnkeyedDecodingContainer {
  let items: [BinaryNode]
  var codingPath: [any CodingKey]
  var currentIndex = 0
  var count: Int? { items.count }
  var isAtEnd: Bool { currentIndex >= items.count }

  private mutating func next() throws -> BinaryNode {
    guard !isAtEnd else {
      throw DecodingError.valueNotFound(Any.self, .init(codingPath: codingPath, debugDescription: "array has no more elements"))
    }
    defer { currentIndex += 1 }
    return items[currentIndex]
  }

  mutating func decodeNil() throws -> Bool {
    guard !isAtEnd, case .null = items[currentIndex] else { return false }
    currentIndex += 1
    return true
  }
  mutating func decode(_ type: Bool.Type) throws -> Bool { try next().scalar(type, codingPath) }
  mutating func decode(_ type: String.Type) throws -> String { try next().scalar(type, codingPath) }
  mutating func decode(_ type: Double.Type) throws -> Double { try next().scalar(type, codingPath) }
  mutating func decode(_ type: Float.Type) throws -> Float { try next().scalar(type, codingPath) }
  mutating func decode(_ type: Int.Type) throws -> Int { try next().integer(type, codingPath) }
  mutating func decode(_ type: Int8.Type) throws -> Int8 { try next().integer(type, codingPath) }
  mutating func decode(_ type: Int16.Type) throws -> Int16 { try next().integer(type, codingPath) }
  mutating func decode(_ type: Int32.Type) throws -> Int32 { try next().integer(type, codingPath) }
  mutating func decode(_ type: Int64.Type) throws -> Int64 { try next().integer(type, codingPath) }
  mutating func decode(_ type: UInt.Type) throws -> UInt { try next().integer(type, codingPath) }
  mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try next().integer(type, codingPath) }
  mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try next().integer(type, codingPath) }
  mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try next().integer(type, codingPath) }
  mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try next().integer(type, codingPath) }
  mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try NodeDecoder.decode(type, from: next(), path: codingPath) }

  mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
    try NodeDecoder(node: next(), codingPath: codingPath).container(keyedBy: type)
  }
  mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
    try NodeDecoder(node: next(), codingPath: codingPath).unkeyedContainer()
  }
  mutating func superDecoder() throws -> any Decoder { NodeDecoder(node: try next(), codingPath: codingPath) }
}

struct SingleReader: SingleValueDecodingContainer {
  let node: BinaryNode
  var codingPath: [any CodingKey]

  func decodeNil() -> Bool {
    if case .null = node { return true }
    return false
  }
  func decode(_ type: Bool.Type) throws -> Bool { try node.scalar(type, codingPath) }
  func decode(_ type: String.Type) throws -> String { try node.scalar(type, codingPath) }
  func decode(_ type: Double.Type) throws -> Double { try node.scalar(type, codingPath) }
  func decode(_ type: Float.Type) throws -> Float { try node.scalar(type, codingPath) }
  func decode(_ type: Int.Type) throws -> Int { try node.integer(type, codingPath) }
  func decode(_ type: Int8.Type) throws -> Int8 { try node.integer(type, codingPath) }
  func decode(_ type: Int16.Type) throws -> Int16 { try node.integer(type, codingPath) }
  func decode(_ type: Int32.Type) throws -> Int32 { try node.integer(type, codingPath) }
  func decode(_ type: Int64.Type) throws -> Int64 { try node.integer(type, codingPath) }
  func decode(_ type: UInt.Type) throws -> UInt { try node.integer(type, codingPath) }
  func decode(_ type: UInt8.Type) throws -> UInt8 { try node.integer(type, codingPath) }
  func decode(_ type: UInt16.Type) throws -> UInt16 { try node.integer(type, codingPath) }
  func decode(_ type: UInt32.Type) throws -> UInt32 { try node.integer(type, codingPath) }
  func decode(_ type: UInt64.Type) throws -> UInt64 { try node.integer(type, codingPath) }
  func decode<T: Decodable>(_ type: T.Type) throws -> T { try NodeDecoder.decode(type, from: node, path: codingPath) }
}

/// `[String: V]` decoded straight from its map node: the same dictionary that `Dictionary.init(from:)` builds
/// through a keyed container, without its per-key `CodingKey` boxes and `allKeys` array (issue 14: the
/// snapshot's 100,000-entry request-id map was most of a restart's snapshot decode).
protocol StringKeyedMap {
  static func decodeValues(_ map: [String: BinaryNode], path: [any CodingKey]) throws -> Self
}

extension Dictionary: StringKeyedMap where Key == String, Value: Decodable {
  static func decodeValues(_ map: [String: BinaryNode], path: [any CodingKey]) throws -> Self {
    if Value.self == UInt64.self { return try map.mapValues { try $0.integer(UInt64.self, path) } as! Self }
    if Value.self == String.self { return try map.mapValues { try $0.scalar(String.self, path) } as! Self }
    return try map.mapValues { try NodeDecoder.decode(Value.self, from: $0, path: path) }
  }
}
