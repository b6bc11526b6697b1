import LogTools
import Synchronization

/// The summary line of the commonest records rendered straight from the record's `GatewayEvent` payload
/// bytes into a byte buffer, without decoding a `GatewayEvent` value or building a `String` (issue 12:
/// WatchEvents catch-up rate; a swift-protobuf decode and a rendered `String` cost more than the log's own
/// read). The audit kinds (refusals, credential disclosures, exec start/end, supervisor sessions, SSH
/// tunnels) are rendered here; the mutations that dominate a real gateway's log (sandbox lifecycle,
/// workspaces, templates, certificates, services: AuditFastSummary+Sandboxes.swift; providers, policies,
/// settings, inference routes, SSH sessions, credential substitutions: AuditFastSummary+Configuration.swift)
/// beside it. Gateway start-up kinds, restores and checkpoints are rare and left to the decoder.
///
/// The output is byte for byte ``LogTools/EventSummary/describe(_:)`` of the decoded event
/// (AuditFastSummaryTests compare both on every fixture event and on edge cases). Only the canonical
/// encoding is taken: anything else — another or a second event kind, a type that does not match the
/// record's header, a wrong wire type, a non-ASCII string, truncated bytes — answers false, and the caller
/// decodes the payload the usual way (which also raises the usual error for bad bytes).
package enum AuditFastSummary {
  /// Appends the summary of `payload` (a `GatewayEvent`, Protos/events.proto) to `out` and returns true, or
  /// returns false with `out` unchanged when the payload is not one this renders (see the type's comment).
  /// `type` is the record header's event type, which the payload's kind must match.
  static func render(_ payload: UnsafeRawBufferPointer, type: String, into out: inout [UInt8]) -> Bool {
    var top = WireScanner(payload)
    var body: UnsafeRawBufferPointer?
    var kind = 0
    while !top.atEnd {
      guard let (field, wire) = top.tag() else { return false }
      switch field {
      case 1000, 1001:  // request_rpc, request_target: strings, not part of the summary
        guard wire == 2, let s = top.lengthDelimited(), isASCII(s) else { return false }
      default:
        guard kind == 0, wire == 2, Kind.typeName(field) != nil, let b = top.lengthDelimited() else { return false }
        kind = field
        body = b
      }
    }
    guard let body, Kind.typeName(kind) == type else { return false }
    if !Kind.isAudit(kind), decodesMutations.load(ordering: .relaxed) { return false }
    let mark = out.count
    let ok: Bool
    switch kind {
    case Kind.accessRefused: ok = accessRefused(body, &out)
    case Kind.credentialsDisclosed: ok = credentialsDisclosed(body, &out)
    case Kind.execStarted: ok = execStarted(body, &out)
    case Kind.execEnded: ok = execEnded(body, &out)
    case Kind.supervisorConnected: ok = supervisorConnected(body, &out)
    case Kind.supervisorDisconnected: ok = supervisorDisconnected(body, &out)
    case Kind.sshTunnelOpened: ok = sshTunnelOpened(body, &out)
    case Kind.sshTunnelClosed: ok = sshTunnelClosed(body, &out)
    default: ok = sandboxKind(kind, body, &out) ?? configurationKind(kind, body, &out) ?? false
    }
    if !ok { out.removeSubrange(mark...) }
    return ok
  }

  /// For a benchmark comparison only (`openshell-loadgen --watch-decode-mutations`): when true, only the
  /// eight audit kinds are rendered here and every mutation kind is decoded, as before they were covered.
  package static let decodesMutations = Atomic<Bool>(false)

  // MARK: one renderer per kind (the same text as EventSummary.describe)

  /// "refused \(count)× \(rpc) for \(identity) from \(peer)[ (\(distinctPeers) addresses)]: \(code)
  /// \(reason)[; claimed subject "\(claimedSubject)"[ (\(distinctSubjects) distinct subjects)]]", counts at
  /// ``LogTools/ClaimedText/countedDistinct`` written "≥N". An identity `unverified:<subject>` (records older
  /// than the claimed-subject sample) is escaped and capped by the description: left to the decoder.
  private static func accessRefused(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2, 3, 4, 5, 9], varints: [6, 7, 8, 10, 11]) else { return false }
    let identity = m.string(1)
    if identity.starts(with: "unverified:".utf8) { return false }
    out.put("refused ")
    out.put(decimal: m.varint(6))
    out.put("× ")
    out.put(m.string(3))
    out.put(" for ")
    out.put(identity)
    out.put(" from ")
    out.put(m.string(2))
    if m.varint(11) > 1 {
      out.put(" (")
      putAtLeast(m.varint(11), &out)
      out.put(" addresses)")
    }
    out.put(": ")
    out.put(m.string(4))
    out.put(" ")
    out.put(m.string(5))
    if !m.string(9).isEmpty {
      out.put("; claimed subject \"")
      out.put(m.string(9))
      out.put("\"")
      if m.varint(10) > 1 {
        out.put(" (")
        putAtLeast(m.varint(10), &out)
        out.put(" distinct subjects)")
      }
    }
    return true
  }

  /// A refusal window's distinct count: "≥N" from ``LogTools/ClaimedText/countedDistinct`` on.
  private static func putAtLeast(_ n: UInt64, _ out: inout [UInt8]) {
    if n >= UInt64(ClaimedText.countedDistinct) { out.put("≥") }
    out.put(decimal: n)
  }

  /// "credentials \(keys, comma-joined) of \(providers, comma-joined) to \(recipient) via \(rpc)"
  private static func credentialsDisclosed(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2, 3], repeated: [4, 5]) else { return false }
    out.put("credentials ")
    m.joined(5, ",", into: &out)
    out.put(" of ")
    m.joined(4, ",", into: &out)
    out.put(" to ")
    out.put(m.string(2))
    out.put(" via ")
    out.put(m.string(1))
    return true
  }

  /// "exec \(execID)[ (tty)]: \(command, space-joined)"
  private static func execStarted(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2], repeated: [3], varints: [4]) else { return false }
    out.put("exec ")
    out.put(m.string(2))
    if m.varint(4) != 0 { out.put(" (tty)") }
    out.put(": ")
    m.joined(3, " ", into: &out)
    return true
  }

  /// "exec \(execID) ended: " + (error.isEmpty ? "exit \(exitCode)" : error) + " after \(durationMs) ms"
  private static func execEnded(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2, 5], varints: [3, 4]) else { return false }
    out.put("exec ")
    out.put(m.string(2))
    out.put(" ended: ")
    if m.string(5).isEmpty {
      out.put("exit ")
      out.put(signed: Int64(Int32(truncatingIfNeeded: m.varint(3))))
    } else {
      out.put(m.string(5))
    }
    out.put(" after ")
    out.put(decimal: m.varint(4))
    out.put(" ms")
    return true
  }

  /// "supervisor of sandbox \(sandboxID) connected: session \(sessionID), instance \(instanceID) epoch
  /// \(epoch), as \(identity) from \(peer)[ (\(unrecordedSessions) earlier sessions not recorded one by one)]"
  private static func supervisorConnected(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2, 3, 5, 6, 7], varints: [4, 8, 9]) else { return false }
    out.put("supervisor of sandbox ")
    out.put(m.string(1))
    out.put(" connected: session ")
    out.put(m.string(2))
    out.put(", instance ")
    out.put(m.string(3))
    out.put(" epoch ")
    out.put(decimal: m.varint(4))
    out.put(", as ")
    out.put(m.string(6))
    out.put(" from ")
    out.put(m.string(5))
    if m.varint(9) != 0 {
      out.put(" (")
      out.put(decimal: m.varint(9))
      out.put(" earlier sessions not recorded one by one)")
    }
    return true
  }

  /// Without a session: "supervisor of sandbox \(sandboxID): \(unrecordedSessions) sessions not recorded one
  /// by one (\(durationMs) ms in all): \(reason)"; else "supervisor of sandbox \(sandboxID) disconnected:
  /// session \(sessionID) after \(durationMs) ms: \(reason)"
  private static func supervisorDisconnected(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2, 3, 4, 6], varints: [5, 7]) else { return false }
    out.put("supervisor of sandbox ")
    out.put(m.string(1))
    if m.string(2).isEmpty {
      out.put(": ")
      out.put(decimal: m.varint(7))
      out.put(" sessions not recorded one by one (")
      out.put(signed: Int64(bitPattern: m.varint(5)))
      out.put(" ms in all): ")
    } else {
      out.put(" disconnected: session ")
      out.put(m.string(2))
      out.put(" after ")
      out.put(signed: Int64(bitPattern: m.varint(5)))
      out.put(" ms: ")
    }
    out.put(m.string(6))
    return true
  }

  /// "tunnel \(tunnelID) (\(target)) opened on ssh session \(sessionID) to sandbox \(sandboxID)"
  private static func sshTunnelOpened(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2, 3, 4]) else { return false }
    out.put("tunnel ")
    out.put(m.string(1))
    out.put(" (")
    out.put(m.string(4))
    out.put(") opened on ssh session ")
    out.put(m.string(2))
    out.put(" to sandbox ")
    out.put(m.string(3))
    return true
  }

  /// "tunnel \(tunnelID) closed after \(durationMs) ms: \(bytesToSandbox) B to sandbox, \(bytesFromSandbox) B
  /// from sandbox[ (\(reason))]"
  private static func sshTunnelClosed(_ b: UnsafeRawBufferPointer, _ out: inout [UInt8]) -> Bool {
    guard let m = Fields(b, strings: [1, 2, 3, 7], varints: [4, 5, 6]) else { return false }
    out.put("tunnel ")
    out.put(m.string(1))
    out.put(" closed after ")
    out.put(signed: Int64(bitPattern: m.varint(6)))
    out.put(" ms: ")
    out.put(decimal: m.varint(4))
    out.put(" B to sandbox, ")
    out.put(decimal: m.varint(5))
    out.put(" B from sandbox")
    if !m.string(7).isEmpty {
      out.put(" (")
      out.put(m.string(7))
      out.put(")")
    }
    return true
  }

  static func isASCII(_ b: UnsafeRawBufferPointer) -> Bool {
    var acc: UInt8 = 0
    for byte in b { acc |= byte }
    return acc < 0x80
  }
}
