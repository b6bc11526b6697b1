import LogTools

/// ``AuditFastSummary`` for the gateway's configuration records — providers and their credentials (key names
/// only: the sealed values are bytes never read), policy revisions, settings, inference routes, SSH
/// sessions, credential substitutions — byte for byte the text of ``LogTools/EventSummary/describe(_:)``
/// (AuditFastSummaryTests compare both), with the same rules as AuditFastSummary+Sandboxes.swift.
extension AuditFastSummary {
  /// The summary of configuration kind `kind` (a `GatewayEvent.kind` field number): true or false as
  /// ``render(_:type:into:)``, nil when `kind` is not one of this file's.
  static func configurationKind(_ kind: Int, _ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool? {
    switch kind {
    case 40: return providerCreated(b, &out)
    case 41: return providerUpdated(b, &out)
    case 42:  // "credential \(credential.key) rotated (value sealed)"
      guard let m = Fields(b, strings: [1], bytes: [2]), m.once(2) else { return false }
      var key = UnsafeRawBufferPointer(start: nil, count: 0)
      guard m.each(2, { c in sealedKey(c).map { key = $0 } != nil }) else { return false }
      out.put("credential ")
      out.put(key)
      out.put(" rotated (value sealed)")
      return true
    case 43:  // "provider \(workspace)/\(name) deleted; data key destroyed"
      guard let m = Fields(b, strings: [1, 2, 3]) else { return false }
      out.put("provider ")
      out.put(m.string(3))
      out.put("/")
      out.put(m.string(2))
      out.put(" deleted; data key destroyed")
      return true
    case 50, 54:  // "[global ]policy v\(version) submitted|set (sha256:\(contentSha256, 12 characters))"
      let global = kind == 54
      guard let m = global ? Fields(b, strings: [2], varints: [1], bytes: [3]) : Fields(b, strings: [1, 3], varints: [2], bytes: [4])
      else { return false }
      out.put(global ? "global policy v" : "policy v")
      out.put(decimal: UInt64(UInt32(truncatingIfNeeded: m.varint(global ? 1 : 2))))
      out.put(global ? " set (sha256:" : " submitted (sha256:")
      guard putPrefix(m.string(global ? 2 : 3), 12, &out) else { return false }
      out.put(")")
      return true
    case 51, 52, 53, 55:
      // "policy v\(version) loaded", "… failed: \(message)", "… superseded by v\(supersededBy)", "global policy v\(version) deleted"
      let m: Fields?
      switch kind {
      case 52: m = Fields(b, strings: [1, 3], varints: [2])
      case 53: m = Fields(b, strings: [1], varints: [2, 3])
      case 55: m = Fields(b, varints: [1])
      default: m = Fields(b, strings: [1], varints: [2])
      }
      guard let m else { return false }
      out.put(kind == 55 ? "global policy v" : "policy v")
      out.put(decimal: UInt64(UInt32(truncatingIfNeeded: m.varint(kind == 55 ? 1 : 2))))
      switch kind {
      case 51: out.put(" loaded")
      case 52:
        out.put(" failed: ")
        out.put(m.string(3))
      case 53:
        out.put(" superseded by v")
        out.put(decimal: UInt64(UInt32(truncatingIfNeeded: m.varint(3))))
      default: out.put(" deleted")
      }
      return true
    case 60, 61:  // "\(scope): \(key) = \(value)", "\(scope): \(key) deleted"
      guard let m = Fields(b, strings: [1, 2, 3]) else { return false }
      out.put(m.string(1))
      out.put(": ")
      out.put(m.string(2))
      if kind == 60 {
        out.put(" = ")
        out.put(m.string(3))
      } else {
        out.put(" deleted")
      }
      return true
    case 70:  // "route \(route) → \(provider) model \(model) timeout \(timeoutSeconds)s|60s (default)[ (not verified)]"
      guard let m = Fields(b, strings: [1, 2, 3], varints: [4, 5]) else { return false }
      out.put("route ")
      out.put(m.string(1))
      out.put(" → ")
      out.put(m.string(2))
      out.put(" model ")
      out.put(m.string(3))
      out.put(" timeout ")
      let timeout = UInt32(truncatingIfNeeded: m.varint(4))
      if timeout == 0 {
        out.put("60s (default)")
      } else {
        out.put(decimal: UInt64(timeout))
        out.put("s")
      }
      if m.varint(5) == 0 { out.put(" (not verified)") }
      return true
    case 71:  // "route \(route) deleted"
      guard let m = Fields(b, strings: [1]) else { return false }
      out.put("route ")
      out.put(m.string(1))
      out.put(" deleted")
      return true
    case 72:  // "bundle \(revision) routes \(routes, comma-joined)"
      guard let m = Fields(b, strings: [1], repeated: [2]) else { return false }
      out.put("bundle ")
      out.put(m.string(1))
      out.put(" routes ")
      m.joined(2, ",", into: &out)
      return true
    case 80: return sshSessionCreated(b, &out)
    case 81:  // "ssh session \(id) revoked"
      guard let m = Fields(b, strings: [1]) else { return false }
      out.put("ssh session ")
      out.put(m.string(1))
      out.put(" revoked")
      return true
    case 112: return credentialsSubstituted(b, &out)
    default: return nil
    }
  }

  /// "provider \(workspace)/\(name) type \(type) credentials [\(keys sorted, comma-joined)] (values sealed)"
  private static func providerCreated(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2, 3, 4, 7], bytes: [6], maps: [5]),
      let keys = sorted(m, 6, entry: { c in sealedKey(c).map { ($0, $0) } })
    else { return false }
    out.put("provider ")
    out.put(m.string(3))
    out.put("/")
    out.put(m.string(2))
    out.put(" type ")
    out.put(m.string(4))
    out.put(" credentials [")
    putKeys(keys, &out)
    out.put("] (values sealed)")
    return true
  }

  /// The present parts of "config set \(keys sorted); config removed \(keys); credentials set \(keys
  /// sorted) (values sealed); credentials removed \(keys)" joined by "; ".
  private static func providerUpdated(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1], repeated: [3, 5], bytes: [4], maps: [2]),
      let config = sorted(m, 2, entry: { Fields.mapEntry($0, asciiValue: true) }), !config.hasDuplicateKeys,
      let credentials = sorted(m, 4, entry: { c in sealedKey(c).map { ($0, $0) } })
    else { return false }
    var first = true
    func part(_ title: StaticString) {
      if !first { out.put("; ") }
      first = false
      out.put(title)
    }
    if config.count > 0 {
      part("config set ")
      putKeys(config, &out)
    }
    if m.has(3) {
      part("config removed ")
      m.joined(3, ",", into: &out)
    }
    if credentials.count > 0 {
      part("credentials set ")
      putKeys(credentials, &out)
      out.put(" (values sealed)")
    }
    if m.has(5) {
      part("credentials removed ")
      m.joined(5, ",", into: &out)
    }
    return true
  }

  /// "ssh session \(id) for sandbox \(sandboxID) (never expires|expires \(rfc3339), host key \(fingerprint))"
  private static func sshSessionCreated(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2, 3, 5], varints: [4]) else { return false }
    out.put("ssh session ")
    out.put(m.string(1))
    out.put(" for sandbox ")
    out.put(m.string(2))
    let expires = Int64(bitPattern: m.varint(4))
    if expires == 0 {
      out.put(" (never expires")
    } else {
      out.put(" (expires ")
      out.append(contentsOf: rfc3339(ns: UInt64(max(0, expires))).utf8)
    }
    out.put(", host key ")
    out.put(m.string(5))
    out.put(")")
    return true
  }

  /// "credential placeholders substituted in \(total) request(s): " + "\(key)[ of \(provider)] →
  /// \(host):\(port) or (other destinations) by \(binary or (unidentified)) ×\(count)" joined by "; ".
  private static func credentialsSubstituted(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1], varints: [2, 3], bytes: [4]) else { return false }
    var total = 0
    guard
      m.each(
        4,
        { s in
          guard let n = Fields(s, strings: [1, 2, 3, 5], varints: [4, 6]) else { return false }
          total += Int(UInt32(truncatingIfNeeded: n.varint(6)))
          return true
        })
    else { return false }
    out.put("credential placeholders substituted in ")
    out.put(decimal: UInt64(total))
    out.put(" request(s): ")
    var first = true
    return m.each(4) { s in
      guard let n = Fields(s, strings: [1, 2, 3, 5], varints: [4, 6]) else { return false }
      if !first { out.put("; ") }
      first = false
      out.put(n.string(1))
      if !n.string(2).isEmpty {
        out.put(" of ")
        out.put(n.string(2))
      }
      out.put(" → ")
      if n.string(3).isEmpty {
        out.put("(other destinations)")
      } else {
        out.put(n.string(3))
        out.put(":")
        out.put(decimal: UInt64(UInt32(truncatingIfNeeded: n.varint(4))))
      }
      out.put(" by ")
      if n.string(5).isEmpty { out.put("(unidentified)") } else { out.put(n.string(5)) }
      out.put(" ×")
      out.put(decimal: UInt64(UInt32(truncatingIfNeeded: n.varint(6))))
      return true
    }
  }

  /// The key of a `SealedValue` (field 1; the sealed bytes, field 2, are not read), nil if malformed.
  private static func sealedKey(_ b: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
    Fields(b, strings: [1], bytes: [2])?.string(1)
  }

  /// The keys of `entries`, comma-joined.
  private static func putKeys(_ entries: SortedEntries, _ out: inout [UInt8]) {
    for i in 0..<entries.count {
      if i > 0 { out.put(",") }
      out.put(entries.key(i))
    }
  }
}
