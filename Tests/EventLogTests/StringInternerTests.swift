import Testing

@testable import EventLog

/// The interner used while decoding record headers must give exactly `String(validating:)`.
@Suite struct StringInternerTests {
  @Test func returnsEqualStringsAndRejectsInvalidUTF8() {
    let interner = StringInterner()
    // More distinct values than the table has slots: collisions and evictions must never mix values up.
    let values = (0..<1000).map { "type.\($0 % 700)" } + ["sandbox", "ä€𝄞", String(repeating: "x", count: 64)]
    for _ in 0..<3 {
      for v in values {
        let got = Array(v.utf8).withUnsafeBytes { interner.string($0) }
        #expect(got == v)
      }
    }
    let long = String(repeating: "y", count: 65)  // past maxLength: bypasses the table
    #expect(Array(long.utf8).withUnsafeBytes { interner.string($0) } == long)
    for bad: [UInt8] in [[0xFF], [0xC3], [0x61, 0xED, 0xA0, 0x80]] {
      #expect(bad.withUnsafeBytes { interner.string($0) } == nil)
      #expect(bad.withUnsafeBytes { interner.string($0) } == nil)  // not cached either
    }
  }
}
