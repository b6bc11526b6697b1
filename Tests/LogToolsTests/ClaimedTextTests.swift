import LogTools
import Testing

/// What an unverified client claims is kept escaped and capped (issue 12: refusal records must not grow with,
/// nor be formatted by, what an attacker sends).
@Suite struct ClaimedTextTests {
  @Test func controlCharactersAreEscaped() {
    #expect(ClaimedText.sample("CN=a\nb\r\tc") == "CN=a\\nb\\r\\tc")
    #expect(ClaimedText.sample("x\u{1B}[31my\u{7F}\u{85}\u{0}") == "x\\u{001B}[31my\\u{007F}\\u{0085}\\u{0000}")
    #expect(ClaimedText.sample("l\u{2028}p\u{2029}b\u{202E}i\u{2066}") == "l\\u{2028}p\\u{2029}b\\u{202E}i\\u{2066}")
    #expect(ClaimedText.sample("CN=plain,O=openshell é ✓") == "CN=plain,O=openshell é ✓", "printable text is kept")
  }

  @Test func longClaimsAreCappedAtAScalarBoundaryWithTheirLength() {
    let long = String(repeating: "é", count: 5000)  // 10,000 bytes of 2-byte scalars
    let s = ClaimedText.sample(long)
    #expect(s.utf8.count <= ClaimedText.maxBytes && s.utf8.count >= ClaimedText.maxBytes - 2, "\(s.utf8.count)")
    #expect(s.hasSuffix("…(10000 bytes)") && s.hasPrefix("éééé"), "\(s)")
    // Escapes count at their escaped length: 256 newlines do not become 512 bytes.
    let lines = ClaimedText.sample(String(repeating: "\n", count: 256))
    #expect(lines.utf8.count <= ClaimedText.maxBytes && lines.hasSuffix("…(256 bytes)") && lines.hasPrefix("\\n\\n"), "\(lines)")
    // Exactly at the cap: kept whole, no marker.
    let exact = String(repeating: "a", count: ClaimedText.maxBytes)
    #expect(ClaimedText.sample(exact) == exact)
  }

  @Test func olderRecordsIdentitiesAreShownEscaped() {
    #expect(ClaimedText.displayIdentity("unverified:CN=x\ny") == "unverified:CN=x\\ny")
    #expect(ClaimedText.displayIdentity("operator:CN=x/sha256:ab") == "operator:CN=x/sha256:ab")
  }
}
