/// ``AuditFastSummary`` for the sandbox lifecycle and what hangs off it — workspaces, templates, sandbox
/// certificates, conditions, network denials, attached providers, services — byte for byte the text of
/// ``LogTools/EventSummary/describe(_:)`` (AuditFastSummaryTests compare both). Every string field of each
/// message is declared to ``Fields`` (ASCII or decline), maps are sorted by key as `String`s sort, and a map
/// with a repeated key, a repeated message field or more than ``SortedEntries/capacity`` entries is left to
/// the decoder.
extension AuditFastSummary {
  /// The summary of sandbox-side kind `kind` (a `GatewayEvent.kind` field number): true or false as
  /// ``render(_:type:into:)``, nil when `kind` is not one of this file's.
  static func sandboxKind(_ kind: Int, _ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool? {
    switch kind {
    case 3: return certificateIssued(b, &out)
    case 10:  // "workspace \(name)\(labels)"
      guard let m = Fields(b, strings: [1, 2], maps: [3]) else { return false }
      out.put("workspace ")
      out.put(m.string(2))
      return labels(m, 3, &out)
    case 11, 16:  // "workspace \(name)", "template \(workspace)/\(name)"
      guard let m = Fields(b, strings: [1, 2, 3]) else { return false }
      if kind == 11 {
        out.put("workspace ")
      } else {
        out.put("template ")
        out.put(m.string(3))
        out.put("/")
      }
      out.put(m.string(2))
      return true
    case 15:  // "template \(workspace)/\(name)"
      guard let m = Fields(b, strings: [1, 2, 3], bytes: [6], maps: [4, 5]) else { return false }
      out.put("template ")
      out.put(m.string(3))
      out.put("/")
      out.put(m.string(2))
      return true
    case 20: return sandboxRequested(b, &out)
    case 21:  // "driver \(driver)[: \(message)]"
      guard let m = Fields(b, strings: [1, 2, 3]) else { return false }
      out.put("driver ")
      out.put(m.string(2))
      if !m.string(3).isEmpty {
        out.put(": ")
        out.put(m.string(3))
      }
      return true
    case 22:
      guard Fields(b, strings: [1, 2], varints: [3]) != nil else { return false }
      out.put("ready")
      return true
    case 23:  // "\(reason): \(message)"
      guard let m = Fields(b, strings: [1, 2, 3]) else { return false }
      out.put(m.string(2))
      out.put(": ")
      out.put(m.string(3))
      return true
    case 24:  // "stopping[ (\(reason))]"
      guard let m = Fields(b, strings: [1, 2]) else { return false }
      out.put("stopping")
      if !m.string(2).isEmpty {
        out.put(" (")
        out.put(m.string(2))
        out.put(")")
      }
      return true
    case 25, 26, 27, 28:
      guard Fields(b, strings: [1]) != nil else { return false }
      out.put(kind == 25 ? "stopped" : kind == 26 ? "starting" : kind == 27 ? "deleting" : "deleted")
      return true
    case 29:  // "main process exited with code \(exitCode)[ (signal \(signal))]" (int32 fields)
      guard let m = Fields(b, strings: [1], varints: [2, 3]) else { return false }
      out.put("main process exited with code ")
      out.put(signed: Int64(Int32(truncatingIfNeeded: m.varint(2))))
      let signal = Int32(truncatingIfNeeded: m.varint(3))
      if signal != 0 {
        out.put(" (signal ")
        out.put(signed: Int64(signal))
        out.put(")")
      }
      return true
    case 30:  // "condition \(type)=\(status) \(reason): \(message)"
      guard let m = Fields(b, strings: [1, 2, 3, 4, 5]) else { return false }
      out.put("condition ")
      out.put(m.string(2))
      out.put("=")
      out.put(m.string(3))
      out.put(" ")
      out.put(m.string(4))
      out.put(": ")
      out.put(m.string(5))
      return true
    case 31: return networkDenials(b, &out)
    case 44, 45:  // "provider \(provider) attached|detached"
      guard let m = Fields(b, strings: [1, 2]) else { return false }
      out.put("provider ")
      out.put(m.string(2))
      out.put(kind == 44 ? " attached" : " detached")
      return true
    case 86, 87: return service(kind == 86, b, &out)
    default: return nil
    }
  }

  /// "sandbox \(workspace)/\(name) id \(id)\(labels)[ from template \(templateName)][ providers \(providers)]"
  private static func sandboxRequested(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2, 3, 7, 11, 14], repeated: [10], varints: [8], bytes: [6, 9], maps: [4, 5], byteMaps: [12, 13]),
      m.each(9, { Fields($0, strings: [1], varints: [2, 3]) != nil })  // ServiceExposure
    else { return false }
    out.put("sandbox ")
    out.put(m.string(3))
    out.put("/")
    out.put(m.string(2))
    out.put(" id ")
    out.put(m.string(1))
    guard labels(m, 4, &out) else { return false }
    if !m.string(7).isEmpty {
      out.put(" from template ")
      out.put(m.string(7))
    }
    if m.has(10) {
      out.put(" providers ")
      m.joined(10, ",", into: &out)
    }
    return true
  }

  /// "\(role) certificate \(subject) sha256:\(fingerprint, first 16 characters)…"
  private static func certificateIssued(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2, 3, 4, 8, 9], repeated: [7], varints: [5, 6]) else { return false }
    out.put(m.string(1))
    out.put(" certificate ")
    out.put(m.string(2))
    out.put(" sha256:")
    guard putPrefix(m.string(3), 16, &out) else { return false }
    out.put("…")
    return true
  }

  /// "network denied \(total) request(s): " + "\(host):\(port) by \(binary or (unidentified)) ×\(count):
  /// \(reason)" joined by "; " (NetworkDenial: port and count uint32).
  private static func networkDenials(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1], varints: [2, 3], bytes: [4]) else { return false }
    var total = 0
    guard
      m.each(
        4,
        { d in
          guard let n = Fields(d, strings: [1, 3, 4, 5], varints: [2, 6]) else { return false }
          total += Int(UInt32(truncatingIfNeeded: n.varint(6)))
          return true
        })
    else { return false }
    out.put("network denied ")
    out.put(decimal: UInt64(total))
    out.put(" request(s): ")
    var first = true
    return m.each(4) { d in
      guard let n = Fields(d, strings: [1, 3, 4, 5], varints: [2, 6]) else { return false }
      if !first { out.put("; ") }
      first = false
      out.put(n.string(1))
      out.put(":")
      out.put(decimal: UInt64(UInt32(truncatingIfNeeded: n.varint(2))))
      out.put(" by ")
      if n.string(3).isEmpty { out.put("(unidentified)") } else { out.put(n.string(3)) }
      out.put(" ×")
      out.put(decimal: UInt64(UInt32(truncatingIfNeeded: n.varint(6))))
      out.put(": ")
      out.put(n.string(5))
      return true
    }
  }

  /// "service \(service or (unnamed)) of sandbox \(sandboxID) exposed: port \(targetPort), authorization
  /// \(bearer passthrough if authorizationMode == 2, else strip)", or "… deleted".
  private static func service(_ exposed: Bool, _ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2], varints: exposed ? [3, 4] : []) else { return false }
    out.put("service ")
    if m.string(2).isEmpty { out.put("(unnamed)") } else { out.put(m.string(2)) }
    out.put(" of sandbox ")
    out.put(m.string(1))
    guard exposed else {
      out.put(" deleted")
      return true
    }
    out.put(" exposed: port ")
    out.put(decimal: UInt64(UInt32(truncatingIfNeeded: m.varint(3))))
    out.put(Int32(truncatingIfNeeded: m.varint(4)) == 2 ? ", authorization bearer passthrough" : ", authorization strip")
    return true
  }

  /// "" for an empty map, else " labels k=v,k=v" sorted by key; false for a repeated key or too many.
  static func labels(_ m: Fields, _ field: Int, _ out: inout [UInt8]) -> Bool {
    guard let entries = sorted(m, field, entry: { Fields.mapEntry($0, asciiValue: true) }), !entries.hasDuplicateKeys else {
      return false
    }
    guard entries.count > 0 else { return true }
    out.put(" labels ")
    for i in 0..<entries.count {
      if i > 0 { out.put(",") }
      out.put(entries.key(i))
      out.put("=")
      out.put(entries.value(i))
    }
    return true
  }

  /// Every occurrence of field `field` reduced by `entry` to a key and a value, sorted by key; nil when
  /// `entry` declines one or there are more than ``SortedEntries/capacity``.
  static func sorted(
    _ m: Fields, _ field: Int, entry: (UnsafeRawBufferPointer) -> (key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)?
  ) -> SortedEntries? {
    var entries = SortedEntries()
    let ok = m.each(field) { b in
      guard let (k, v) = entry(b) else { return false }
      return entries.insert(k, v)
    }
    return ok ? entries : nil
  }

  /// The first `n` characters of ASCII `s` (`String.prefix(n)`); false when `s` holds a carriage return,
  /// which with a line feed after it makes one `Character` of two bytes.
  static func putPrefix(_ s: UnsafeRawBufferPointer, _ n: Int, _ out: inout [UInt8]) -> Bool {
    guard !s.contains(0x0D) else { return false }
    out.put(UnsafeRawBufferPointer(rebasing: s[0..<min(n, s.count)]))
    return true
  }
}
