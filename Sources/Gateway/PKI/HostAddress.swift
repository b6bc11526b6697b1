import Foundation
import SwiftASN1
import X509

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Turns gateway host names and addresses into subject alternative names (RFC 5280 §4.2.1.6):
/// strings that parse as IPv4/IPv6 addresses become `iPAddress` SANs (4 or 16 octets), everything
/// else a `dNSName` SAN, matching OpenShell's rule for `--gateway-host` (openshell-behavior.md §2.2).
enum HostAddress {
  /// The octets of an IPv4 or IPv6 literal (`[::1]` brackets allowed), or nil for a DNS name.
  static func parseIP(_ text: String) -> [UInt8]? {
    var host = text
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    var v4 = in_addr()
    if inet_pton(AF_INET, host, &v4) == 1 {
      return withUnsafeBytes(of: &v4) { Array($0) }
    }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, host, &v6) == 1 {
      return withUnsafeBytes(of: &v6) { Array($0) }
    }
    return nil
  }

  /// Canonical text for 4 or 16 address octets (`127.0.0.1`, `::1`); nil for other lengths.
  static func format(_ octets: [UInt8]) -> String? {
    var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
    let family: Int32
    switch octets.count {
    case 4: family = AF_INET
    case 16: family = AF_INET6
    default: return nil
    }
    let ok = octets.withUnsafeBytes { raw in
      inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
    }
    guard ok else { return nil }
    return cString(buffer)
  }

  /// The SAN for one host string (trimmed; DNS names lower-cased; empty strings give nil).
  static func generalName(for host: String) -> GeneralName? {
    let trimmed = host.trimmingCharacters(in: .whitespaces)
    guard !trimmed.isEmpty else { return nil }
    if let octets = parseIP(trimmed) {
      return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(octets)))
    }
    return .dnsName(trimmed.lowercased())
  }

  private static func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// This machine's host name from gethostname(2), or nil if unavailable.
  static func machineHostName() -> String? {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count - 1) == 0 else { return nil }
    let name = cString(buffer)
    return name.isEmpty ? nil : name
  }

  /// The server certificate's SANs: DNS:localhost, IP:127.0.0.1, IP:::1, the machine host name,
  /// then every gateway host, without duplicates, in that order.
  static func serverSANs(gatewayHosts: [String]) -> [GeneralName] {
    var hosts = ["localhost", "127.0.0.1", "::1"]
    if let name = machineHostName() { hosts.append(name) }
    hosts.append(contentsOf: gatewayHosts)
    var seen: [GeneralName] = []
    for host in hosts {
      if let name = generalName(for: host), !seen.contains(name) { seen.append(name) }
    }
    return seen
  }
}
