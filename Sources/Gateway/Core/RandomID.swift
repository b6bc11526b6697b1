import Foundation

/// Random ids for new objects (sandboxes, providers, workspaces, templates, data keys, request ids).
///
/// The bytes come from the standard library's `SystemRandomNumberGenerator`, which on Linux reads
/// `getrandom(2)`: it needs no file descriptor, so ids keep working when descriptors run out, and it stops the
/// process rather than return predictable bytes. Foundation's `UUID()` opened `/dev/urandom` and, when that
/// failed for want of descriptors, returned the constant `00000000-0000-4000-8000-000000000000`, after which
/// every create collided (issue 17). Nothing here falls back to a constant.
enum RandomID {
  /// A random version-4 `UUID` value (for in-memory keys: sessions, subscribers, relay channels).
  static func make() -> UUID { UUID(uuidString: uuid())! }

  /// A random (version 4, RFC 9562 §5.4) UUID in lowercase, e.g. `3f2a9c1e-…`.
  static func uuid() -> String {
    var g = SystemRandomNumberGenerator()
    var b = [UInt8](repeating: 0, count: 16)
    for half in 0..<2 {
      let v = g.next()
      for i in 0..<8 { b[half * 8 + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }
    b[6] = b[6] & 0x0F | 0x40
    b[8] = b[8] & 0x3F | 0x80
    let hex = b.map { byte -> String in
      let s = String(byte, radix: 16)
      return s.count == 1 ? "0" + s : s
    }
    return [hex[0..<4], hex[4..<6], hex[6..<8], hex[8..<10], hex[10..<16]].map { $0.joined() }.joined(separator: "-")
  }
}
