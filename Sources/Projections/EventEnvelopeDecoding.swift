import EventLog
import SwiftProtobuf

// The envelope of a stored event decoded without swift-protobuf's generic envelope path (issue 14: replay).
// `GatewayEvent(serializedBytes:)` walks the envelope with a generic `BinaryDecoder`, instantiates generic
// metadata for the oneof case's `Optional<Message>` and moves the decoded case through it: about a third
// of a payload's decode time in a replay. A payload written by `newEvent` is the oneof field first, then at
// most `request_rpc` (1000) and `request_target` (1001); that shape is split here and only the case's own
// message is decoded by swift-protobuf. Any other shape is left to the general decoder.

/// A payload of the shape `newEvent` writes, split: one event-kind field, optionally followed by `request_rpc`
/// and then `request_target` (each once, valid UTF-8). ``event`` is what `GatewayEvent(serializedBytes:)`
/// returns for it.
struct EventEnvelope {
  var kind: GatewayEvent.OneOf_Kind
  var requestRpc = ""
  var requestTarget = ""

  /// Nil for any other payload (other or repeated fields, wire types, field numbers this build does not know,
  /// bytes that do not decode): decode those the general way, which also reports their errors.
  init?(_ payload: UnsafeRawBufferPointer) {
    var r = ByteReader(payload)
    var rpc = ""
    var target = ""
    guard let field = Self.kindField(&r), Self.requestFields(&r, { n, s in if n == 1000 { rpc = s } else { target = s } }),
      let kind = try? GatewayEvent.kind(number: field.number, field.bytes)
    else { return nil }
    self.kind = kind
    requestRpc = rpc
    requestTarget = target
  }

  /// The event kind alone of a payload of this shape (its request fields are checked, not kept): what `apply`
  /// needs, without moving the kind through an envelope. Nil as for `init?(_:)`.
  static func kind(of payload: UnsafeRawBufferPointer) -> GatewayEvent.OneOf_Kind? {
    var r = ByteReader(payload)
    guard let field = kindField(&r), requestFields(&r, { _, _ in }) else { return nil }
    return try? GatewayEvent.kind(number: field.number, field.bytes)
  }

  /// The first field, length-delimited: the event kind's number and message bytes.
  private static func kindField(_ r: inout ByteReader) -> (number: UInt64, bytes: UnsafeRawBufferPointer)? {
    guard let tag = r.varint(), tag & 7 == 2, let bytes = r.lengthDelimited() else { return nil }
    return (tag >> 3, bytes)
  }

  /// The fields after the kind: `request_rpc` (1000), then `request_target` (1001), each at most once and valid
  /// UTF-8, passed to `found`; false for anything else.
  private static func requestFields(_ r: inout ByteReader, _ found: (UInt64, String) -> Void) -> Bool {
    var last: UInt64 = 0
    while r.remaining > 0 {
      guard let t = r.varint(), t & 7 == 2, t >> 3 > last, t >> 3 == 1000 || t >> 3 == 1001,
        let bytes = r.lengthDelimited(), let s = String(validating: bytes, as: UTF8.self)
      else { return false }
      found(t >> 3, s)
      last = t >> 3
    }
    return true
  }

  /// The whole event.
  var event: GatewayEvent {
    var e = GatewayEvent(kind)
    e.requestRpc = requestRpc
    e.requestTarget = requestTarget
    return e
  }
}

extension GatewayEvent {
  /// The event kind stored as field `number` of the envelope (Protos/events.proto), nil for a number this
  /// build does not know.
  fileprivate static func kind(number: UInt64, _ b: UnsafeRawBufferPointer) throws -> OneOf_Kind? {
    let b = b.bytes
    switch number {
    case 1: return .gatewayInitialized(try Openshell_Events_V1_GatewayInitialized(serializedBytes: b))
    case 2: return .gatewayConfigured(try Openshell_Events_V1_GatewayConfigured(serializedBytes: b))
    case 3: return .certificateIssued(try Openshell_Events_V1_CertificateIssued(serializedBytes: b))
    case 10: return .workspaceCreated(try Openshell_Events_V1_WorkspaceCreated(serializedBytes: b))
    case 11: return .workspaceDeleted(try Openshell_Events_V1_WorkspaceDeleted(serializedBytes: b))
    case 15: return .sandboxTemplateCreated(try Openshell_Events_V1_SandboxTemplateCreated(serializedBytes: b))
    case 16: return .sandboxTemplateDeleted(try Openshell_Events_V1_SandboxTemplateDeleted(serializedBytes: b))
    case 20: return .sandboxRequested(try Openshell_Events_V1_SandboxRequested(serializedBytes: b))
    case 21: return .sandboxProvisioning(try Openshell_Events_V1_SandboxProvisioning(serializedBytes: b))
    case 22: return .sandboxReady(try Openshell_Events_V1_SandboxReady(serializedBytes: b))
    case 23: return .sandboxFailed(try Openshell_Events_V1_SandboxFailed(serializedBytes: b))
    case 24: return .sandboxStopping(try Openshell_Events_V1_SandboxStopping(serializedBytes: b))
    case 25: return .sandboxStopped(try Openshell_Events_V1_SandboxStopped(serializedBytes: b))
    case 26: return .sandboxStarting(try Openshell_Events_V1_SandboxStarting(serializedBytes: b))
    case 27: return .sandboxDeleting(try Openshell_Events_V1_SandboxDeleting(serializedBytes: b))
    case 28: return .sandboxDeleted(try Openshell_Events_V1_SandboxDeleted(serializedBytes: b))
    case 29: return .sandboxMainProcessExited(try Openshell_Events_V1_SandboxMainProcessExited(serializedBytes: b))
    case 30: return .sandboxConditionSet(try Openshell_Events_V1_SandboxConditionSet(serializedBytes: b))
    case 31: return .sandboxNetworkDenials(try Openshell_Events_V1_SandboxNetworkDenials(serializedBytes: b))
    case 40: return .providerCreated(try Openshell_Events_V1_ProviderCreated(serializedBytes: b))
    case 41: return .providerUpdated(try Openshell_Events_V1_ProviderUpdated(serializedBytes: b))
    case 42: return .providerCredentialRotated(try Openshell_Events_V1_ProviderCredentialRotated(serializedBytes: b))
    case 43: return .providerDeleted(try Openshell_Events_V1_ProviderDeleted(serializedBytes: b))
    case 44: return .sandboxProviderAttached(try Openshell_Events_V1_SandboxProviderAttached(serializedBytes: b))
    case 45: return .sandboxProviderDetached(try Openshell_Events_V1_SandboxProviderDetached(serializedBytes: b))
    case 50: return .policyRevisionSubmitted(try Openshell_Events_V1_PolicyRevisionSubmitted(serializedBytes: b))
    case 51: return .policyRevisionLoaded(try Openshell_Events_V1_PolicyRevisionLoaded(serializedBytes: b))
    case 52: return .policyRevisionFailed(try Openshell_Events_V1_PolicyRevisionFailed(serializedBytes: b))
    case 53: return .policyRevisionSuperseded(try Openshell_Events_V1_PolicyRevisionSuperseded(serializedBytes: b))
    case 54: return .globalPolicySet(try Openshell_Events_V1_GlobalPolicySet(serializedBytes: b))
    case 55: return .globalPolicyDeleted(try Openshell_Events_V1_GlobalPolicyDeleted(serializedBytes: b))
    case 60: return .settingSet(try Openshell_Events_V1_SettingSet(serializedBytes: b))
    case 61: return .settingDeleted(try Openshell_Events_V1_SettingDeleted(serializedBytes: b))
    case 70: return .inferenceRouteSet(try Openshell_Events_V1_InferenceRouteSet(serializedBytes: b))
    case 71: return .inferenceRouteDeleted(try Openshell_Events_V1_InferenceRouteDeleted(serializedBytes: b))
    case 72: return .inferenceBundlePublished(try Openshell_Events_V1_InferenceBundlePublished(serializedBytes: b))
    case 80: return .sshSessionCreated(try Openshell_Events_V1_SshSessionCreated(serializedBytes: b))
    case 81: return .sshSessionRevoked(try Openshell_Events_V1_SshSessionRevoked(serializedBytes: b))
    case 82: return .sshTunnelOpened(try Openshell_Events_V1_SshTunnelOpened(serializedBytes: b))
    case 83: return .sshTunnelClosed(try Openshell_Events_V1_SshTunnelClosed(serializedBytes: b))
    case 86: return .serviceExposed(try Openshell_Events_V1_ServiceExposed(serializedBytes: b))
    case 87: return .serviceDeleted(try Openshell_Events_V1_ServiceDeleted(serializedBytes: b))
    case 90: return .auditCheckpoint(try Openshell_Events_V1_AuditCheckpoint(serializedBytes: b))
    case 91: return .accessRefused(try Openshell_Events_V1_AccessRefused(serializedBytes: b))
    case 92: return .credentialsDisclosed(try Openshell_Events_V1_CredentialsDisclosed(serializedBytes: b))
    case 93: return .execStarted(try Openshell_Events_V1_ExecStarted(serializedBytes: b))
    case 94: return .execEnded(try Openshell_Events_V1_ExecEnded(serializedBytes: b))
    case 95: return .gatewayRestored(try Openshell_Events_V1_GatewayRestored(serializedBytes: b))
    case 110: return .supervisorConnected(try Openshell_Events_V1_SupervisorConnected(serializedBytes: b))
    case 111: return .supervisorDisconnected(try Openshell_Events_V1_SupervisorDisconnected(serializedBytes: b))
    case 112: return .credentialsSubstituted(try Openshell_Events_V1_CredentialsSubstituted(serializedBytes: b))
    default: return nil
    }
  }
}

extension ByteReader {
  /// A protobuf length-delimited field's bytes: a length varint and that many bytes; nil when truncated.
  fileprivate mutating func lengthDelimited() -> UnsafeRawBufferPointer? {
    guard let n = varint(), n <= UInt64(remaining) else { return nil }
    return bytes(Int(n))
  }
}
