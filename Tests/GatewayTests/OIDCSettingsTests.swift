import Foundation
import Gateway
import Testing

/// The issuer rule (issue 13; newcomer finding: any host starting with `127.` passed as loopback).
@Suite struct OIDCSettingsTests {
  @Test func loopbackIsAnAddressNotAPrefix() {
    for host in ["127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "::1", "[::1]"] { #expect(OIDCSettings.isLoopback(host), "\(host)") }
    for host in ["127.evil.example", "127.0.0.1.nip.io", "10.0.0.1", "example.com", "", "::2"] { #expect(!OIDCSettings.isLoopback(host), "\(host)") }
  }

  @Test func httpIssuersOnlyOnLoopback() throws {
    try OIDCSettings(issuer: "http://127.0.0.1:8080/o", audience: "a").validate()
    try OIDCSettings(issuer: "https://idp.example.com/realms/x", audience: "a").validate()
    #expect(throws: OIDCSettingsError.self) { try OIDCSettings(issuer: "http://127.evil.example/o", audience: "a").validate() }
    #expect(throws: OIDCSettingsError.self) { try OIDCSettings(issuer: "http://idp.example.com/o", audience: "a").validate() }
  }
}
