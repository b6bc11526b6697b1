import Foundation
import LogTools
import Testing

/// The audit timeline's time column (formatted by hand for speed) agrees with Foundation's formatter.
@Suite struct AuditTimeTests {
  @Test func rfc3339MatchesFoundation() {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    f.timeZone = TimeZone(identifier: "UTC")
    for ns: UInt64 in [0, 1_700_000_000_001_000_000, 951_782_400_123_000_000, 4_102_444_799_999_000_000, 1_234_567_890_000_000_000] {
      #expect(rfc3339(ns: ns) == f.string(from: Date(timeIntervalSince1970: Double(ns / 1_000_000) / 1000)), "\(ns)")
    }
    #expect(rfc3339(ns: 1_700_000_000_001_999_999) == "2023-11-14T22:13:20.001Z", "truncated to the millisecond")
  }
}
