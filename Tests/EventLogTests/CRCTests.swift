import Testing

@testable import EventLog

/// The hardware CRC-32C (SSE4.2, C target `CLogHash`) and the Swift slicing-by-8 fallback must agree bit for
/// bit: records written on one machine are checked on another.
@Suite struct CRCTests {
  /// RFC 3720 (iSCSI) appendix B.4 test vectors, plus the usual "123456789" check value.
  static let vectors: [([UInt8], UInt32)] = [
    ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
    ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
    ((0..<32).map { UInt8($0) }, 0x46DD_794E),
    ((0..<32).map { UInt8(31 - $0) }, 0x113F_DB5C),
    (
      [
        0x01, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18,
        0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      ], 0xD996_3A56
    ),
    (Array("123456789".utf8), 0xE306_9283),
    ([], 0),
  ]

  @Test func rfc3720VectorsBothImplementations() {
    for (input, expected) in Self.vectors {
      input.withUnsafeBytes { b in
        #expect(CRC32C.checksum(b, continuing: 0) == expected, "active (\(CRC32C.hardware ? "hw" : "sw"))")
        #expect(CRC32C.softwareChecksum(b) == expected, "software")
      }
    }
  }

  /// This CI machine class (x86-64 with SSE4.2) must take the hardware path; otherwise the comparison
  /// below would compare the software implementation with itself.
  @Test func hardwarePathIsUsedOnX86() {
    #if arch(x86_64)
      #expect(CRC32C.hardware)
    #endif
  }

  @Test func hardwareAndSoftwareAgreeOnRandomInputs() {
    var rng = SplitMix(seed: 0x1234_5678_9ABC_DEF0)
    let pool = (0..<4096).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    for _ in 0..<2000 {
      let start = Int(rng.next() % 64)  // unaligned starts
      let count = Int(rng.next() % UInt64(pool.count - start))
      let key = rng.next()
      let previous = UInt32(truncatingIfNeeded: rng.next())
      pool.withUnsafeBytes { all in
        let b = UnsafeRawBufferPointer(rebasing: all[start..<(start + count)])
        #expect(CRC32C.checksum(b, continuing: previous) == CRC32C.softwareChecksum(b, continuing: previous))
        // Keyed form (v2 records): CRC of the 8-byte big-endian key, then the bytes.
        var k = key.bigEndian
        let keyed = withUnsafeBytes(of: &k) { CRC32C.softwareChecksum(b, continuing: CRC32C.softwareChecksum($0)) }
        #expect(CRC32C.checksum(key: key, b) == keyed)
      }
    }
  }

  /// Deterministic 64-bit generator (SplitMix64), so a failure reproduces.
  struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
      state &+= 0x9E37_79B9_7F4A_7C15
      var z = state
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
  }
}
