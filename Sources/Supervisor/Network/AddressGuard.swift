import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// An IPv4 or IPv6 address as 4 or 16 bytes.
struct IPAddress: Hashable, Sendable, CustomStringConvertible {
  var bytes: [UInt8]

  /// Parses a literal (`10.0.0.1`, `::1`, `[::1]`); nil when it is not one.
  init?(_ text: String) {
    var t = text
    if t.hasPrefix("["), t.hasSuffix("]") { t = String(t.dropFirst().dropLast()) }
    var v4 = in_addr()
    var v6 = in6_addr()
    if inet_pton(AF_INET, t, &v4) == 1 {
      bytes = withUnsafeBytes(of: &v4) { Array($0) }
    } else if inet_pton(AF_INET6, t, &v6) == 1 {
      bytes = withUnsafeBytes(of: &v6) { Array($0) }
    } else {
      return nil
    }
  }

  init(bytes: [UInt8]) { self.bytes = bytes }

  var isV4: Bool { bytes.count == 4 }

  /// The embedded IPv4 address of an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
  var unmapped: IPAddress {
    if bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
      return IPAddress(bytes: Array(bytes[12..<16]))
    }
    return self
  }

  var description: String {
    var buf = [CChar](repeating: 0, count: 64)
    if isV4 {
      var a = in_addr()
      withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: bytes) }
      inet_ntop(AF_INET, &a, &buf, 64)
    } else {
      var a = in6_addr()
      withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: bytes) }
      inet_ntop(AF_INET6, &a, &buf, 64)
    }
    return String(cString: buf)
  }
}

/// An address prefix (`10.0.0.0/8`, `fe80::/10`, or a single address).
struct CIDR: Sendable {
  var network: IPAddress
  var bits: Int

  init?(_ text: String) {
    let parts = text.split(separator: "/", maxSplits: 1)
    guard let ip = IPAddress(String(parts[0])) else { return nil }
    let max = ip.bytes.count * 8
    let bits = parts.count == 2 ? Int(parts[1]) : max
    guard let bits, bits >= 0, bits <= max else { return nil }
    network = ip
    self.bits = bits
  }

  /// Whether `ip` lies in the prefix (IPv4-mapped IPv6 addresses are compared as IPv4).
  func contains(_ address: IPAddress) -> Bool {
    let ip = address.unmapped
    let net = network.unmapped
    guard ip.bytes.count == net.bytes.count else { return false }
    let effective = bits - (network.bytes.count - net.bytes.count) * 8
    var remaining = max(effective, 0)
    for i in 0..<ip.bytes.count where remaining > 0 {
      let n = min(remaining, 8)
      let mask = UInt8(truncatingIfNeeded: 0xff << (8 - n))
      if ip.bytes[i] & mask != net.bytes[i] & mask { return false }
      remaining -= n
    }
    return true
  }
}

/// The SSRF guard (enforcement-and-ssh.md §1.4, row "SSRF"): after one DNS resolution, cloud metadata
/// addresses are always refused; internal addresses (loopback, RFC 1918, CGNAT, link-local, ULA,
/// unspecified, this sandbox subnet range) only when the allowing endpoint's `allowed_ips` contains
/// them. The proxy then dials exactly the addresses returned here, never resolving again.
enum AddressGuard {
  /// Always refused, also IPv4-mapped: AWS/GCP/Azure metadata and AWS's IPv6 metadata address.
  static let alwaysBlocked = ["169.254.169.254/32", "fd00:ec2::254/128"].compactMap(CIDR.init)
  static let internalRanges = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
    "::/128", "::1/128", "fc00::/7", "fe80::/10",
  ].compactMap(CIDR.init)

  /// Resolves `host` (or parses an IP literal) with getaddrinfo(3) (blocking: call off the event loop).
  /// - Throws: a message when the name does not resolve.
  static func resolve(_ host: String) throws -> [IPAddress] {
    if let ip = IPAddress(host) { return [ip] }
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var result: UnsafeMutablePointer<addrinfo>?
    let rc = getaddrinfo(host, nil, &hints, &result)
    guard rc == 0, let first = result else {
      throw GuardError(message: "DNS resolution of \(host) failed: \(String(cString: gai_strerror(rc)))")
    }
    defer { freeaddrinfo(first) }
    var out: [IPAddress] = []
    var p: UnsafeMutablePointer<addrinfo>? = first
    while let ai = p {
      if ai.pointee.ai_family == AF_INET {
        var sin = ai.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
        out.append(IPAddress(bytes: withUnsafeBytes(of: &sin.sin_addr) { Array($0) }))
      } else if ai.pointee.ai_family == AF_INET6 {
        var sin6 = ai.pointee.ai_addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee }
        out.append(IPAddress(bytes: withUnsafeBytes(of: &sin6.sin6_addr) { Array($0) }))
      }
      p = ai.pointee.ai_next
    }
    var seen = Set<IPAddress>()
    return out.filter { seen.insert($0).inserted }
  }

  /// The addresses that may be dialled, or why none may: every resolved address must pass (one bad
  /// answer refuses the request, so a rebinding answer cannot slip in next to a good one).
  static func check(_ addresses: [IPAddress], allowedIPs: [String]) -> Result<[IPAddress], GuardError> {
    let allowed = allowedIPs.compactMap(CIDR.init)
    for ip in addresses {
      if alwaysBlocked.contains(where: { $0.contains(ip) }) {
        return .failure(GuardError(message: "\(ip) is a cloud metadata address (always blocked)"))
      }
      if internalRanges.contains(where: { $0.contains(ip) }), !allowed.contains(where: { $0.contains(ip) }) {
        return .failure(GuardError(message: "\(ip) is an internal address not listed in the endpoint's allowed_ips"))
      }
    }
    guard !addresses.isEmpty else { return .failure(GuardError(message: "no address to dial")) }
    return .success(addresses)
  }

  struct GuardError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
  }
}
