import EventLog
import SwiftProtobuf

/// The envelope of every gateway event (Protos/events.proto, schema version 1).
public typealias GatewayEvent = Openshell_Events_V1_GatewayEvent

/// Payload schema version written by this build into `NewEvent.payloadVersion`.
public let gatewayEventSchemaVersion: UInt16 = 1

/// Errors raised while decoding or applying events. Bad data never crashes the process.
public struct ProjectionError: Error, Sendable, CustomStringConvertible {
  /// Sequence number of the offending record.
  public let seq: UInt64
  /// What is wrong with the record, e.g. an undecodable payload.
  public let message: String
  /// An error for the record at `seq`.
  public init(seq: UInt64, message: String) {
    self.seq = seq
    self.message = message
  }
  /// `seq N: message`.
  public var description: String { "seq \(seq): \(message)" }
}

extension GatewayEvent {
  /// Builds an envelope around one event kind.
  public init(_ kind: OneOf_Kind) {
    self.init()
    self.kind = kind
  }

  /// Stable, dotted event type name stored in the record header, e.g. `sandbox.requested`.
  /// Used for filtering without decoding the payload. Empty when `kind` is unset.
  public var typeName: String { kind?.typeName ?? "" }

  /// The aggregate (consistency boundary) the event belongs to. Sandboxes, providers, templates,
  /// workspaces and SSH sessions are aggregates by id; gateway-wide configuration (certificates,
  /// global policy, settings, inference) belongs to singleton aggregates.
  public var aggregate: AggregateRef {
    guard let kind else { return AggregateRef(kind: "unknown", id: "") }
    switch kind {
    case .gatewayInitialized, .gatewayConfigured, .gatewayRestored: return AggregateRef(kind: "gateway", id: "gateway")
    case .certificateIssued(let e): return AggregateRef(kind: "certificate", id: e.role == "sandbox" ? "sandbox:\(e.sandboxID)" : e.role)
    case .workspaceCreated(let e): return AggregateRef(kind: "workspace", id: e.name)
    case .workspaceDeleted(let e): return AggregateRef(kind: "workspace", id: e.name)
    case .sandboxTemplateCreated(let e): return AggregateRef(kind: "template", id: e.id)
    case .sandboxTemplateDeleted(let e): return AggregateRef(kind: "template", id: e.id)
    case .sandboxRequested(let e): return .sandbox(e.id)
    case .sandboxProvisioning(let e): return .sandbox(e.id)
    case .sandboxReady(let e): return .sandbox(e.id)
    case .sandboxFailed(let e): return .sandbox(e.id)
    case .sandboxStopping(let e): return .sandbox(e.id)
    case .sandboxStopped(let e): return .sandbox(e.id)
    case .sandboxStarting(let e): return .sandbox(e.id)
    case .sandboxDeleting(let e): return .sandbox(e.id)
    case .sandboxDeleted(let e): return .sandbox(e.id)
    case .sandboxMainProcessExited(let e): return .sandbox(e.id)
    case .sandboxConditionSet(let e): return .sandbox(e.id)
    case .sandboxNetworkDenials(let e): return .network(e.id)
    case .sandboxProviderAttached(let e): return .sandbox(e.sandboxID)
    case .sandboxProviderDetached(let e): return .sandbox(e.sandboxID)
    case .providerCreated(let e): return .provider(e.id)
    case .providerUpdated(let e): return .provider(e.id)
    case .providerCredentialRotated(let e): return .provider(e.id)
    case .providerDeleted(let e): return .provider(e.id)
    case .policyRevisionSubmitted(let e): return .policy(e.sandboxID)
    case .policyRevisionLoaded(let e): return .policy(e.sandboxID)
    case .policyRevisionFailed(let e): return .policy(e.sandboxID)
    case .policyRevisionSuperseded(let e): return .policy(e.sandboxID)
    case .globalPolicySet, .globalPolicyDeleted: return .policy("")
    case .settingSet(let e): return AggregateRef(kind: "settings", id: e.scope)
    case .settingDeleted(let e): return AggregateRef(kind: "settings", id: e.scope)
    case .inferenceRouteSet, .inferenceRouteDeleted, .inferenceBundlePublished:
      return AggregateRef(kind: "inference", id: "inference")
    case .sshSessionCreated(let e): return AggregateRef(kind: "ssh_session", id: e.id)
    case .sshSessionRevoked(let e): return AggregateRef(kind: "ssh_session", id: e.id)
    case .auditCheckpoint: return AggregateRef(kind: "audit", id: "checkpoint")
    case .accessRefused: return AggregateRef(kind: "audit", id: "access")
    case .credentialsDisclosed(let e): return AggregateRef(kind: "credentials", id: e.sandboxID.isEmpty ? e.recipient : e.sandboxID)
    case .execStarted(let e): return AggregateRef(kind: "exec", id: e.sandboxID)
    case .execEnded(let e): return AggregateRef(kind: "exec", id: e.sandboxID)
    case .sshTunnelOpened(let e): return AggregateRef(kind: "ssh_tunnel", id: e.sandboxID)
    case .sshTunnelClosed(let e): return AggregateRef(kind: "ssh_tunnel", id: e.sandboxID)
    case .serviceExposed(let e): return .sandbox(e.sandboxID)
    case .serviceDeleted(let e): return .sandbox(e.sandboxID)
    case .credentialsSubstituted(let e): return AggregateRef(kind: "credentials", id: e.sandboxID)
    case .supervisorConnected(let e): return AggregateRef(kind: "supervisor", id: e.sandboxID)
    case .supervisorDisconnected(let e): return AggregateRef(kind: "supervisor", id: e.sandboxID)
    }
  }

  /// Wraps the event into a log record to append.
  /// - Parameters:
  ///   - actor: the authenticated identity that caused it, or `system`.
  ///   - requestID: the client's request id (or a generated one).
  ///   - timestampNs: ns since the Unix epoch (UTC); nil lets the log stamp it.
  public func newEvent(actor: String, requestID: String, timestampNs: UInt64? = nil) -> NewEvent {
    // Serialization of a message without maps is deterministic; maps are sorted by key first.
    let bytes = (try? self.serializedBytes(options: .deterministic) as [UInt8]) ?? []
    return NewEvent(
      type: typeName, aggregate: aggregate, actor: actor, requestID: requestID,
      payloadVersion: gatewayEventSchemaVersion, payload: bytes, timestampNs: timestampNs)
  }

  /// Decodes a record's payload. Throws `ProjectionError` on an unknown schema version or bad bytes.
  public static func decode(_ record: EventRecord) throws -> GatewayEvent {
    try checkVersion(record)
    let event: GatewayEvent
    if let e = record.payload.withUnsafeBytes({ EventEnvelope($0) }) {
      event = e.event  // the common shape, without the generic envelope decode (EventEnvelopeDecoding.swift)
    } else {
      event = try decodeGeneral(record)
    }
    try check(event.kind, of: record)
    return event
  }

  /// The event kind of a record's payload, what `apply` needs (its request fields are not kept). Throws as
  /// ``decode(_:)``.
  static func decodeKind(_ record: EventRecord) throws -> OneOf_Kind {
    try checkVersion(record)
    let kind = try record.payload.withUnsafeBytes { EventEnvelope.kind(of: $0) } ?? decodeGeneral(record).kind
    try check(kind, of: record)
    return kind!
  }

  private static func checkVersion(_ record: EventRecord) throws {
    guard record.payloadVersion == gatewayEventSchemaVersion else {
      throw ProjectionError(seq: record.seq, message: "unsupported payload schema version \(record.payloadVersion)")
    }
  }

  /// swift-protobuf's decode of the whole payload.
  private static func decodeGeneral(_ record: EventRecord) throws -> GatewayEvent {
    do {
      return try GatewayEvent(serializedBytes: record.payload)
    } catch {
      throw ProjectionError(seq: record.seq, message: "payload does not decode as GatewayEvent: \(error)")
    }
  }

  /// Throws unless `kind` is set and its type name is the record's.
  private static func check(_ kind: OneOf_Kind?, of record: EventRecord) throws {
    guard let name = kind?.typeName else {
      throw ProjectionError(seq: record.seq, message: "payload has no known event kind (written by a newer gateway?)")
    }
    guard name == record.type else {
      throw ProjectionError(seq: record.seq, message: "header type \(record.type) does not match payload \(name)")
    }
  }
}

extension BinaryEncodingOptions {
  /// Map entries sorted by key, so that equal events encode to equal bytes.
  static var deterministic: BinaryEncodingOptions {
    var o = BinaryEncodingOptions()
    o.useDeterministicOrdering = true
    return o
  }
}

extension AggregateRef {
  /// The lifecycle aggregate of one sandbox (`id` = sandbox id): optimistic concurrency for its transitions.
  public static func sandbox(_ id: String) -> AggregateRef { AggregateRef(kind: "sandbox", id: id) }
  /// One provider (`id` = provider id): its updates, rotations and deletion are serialized through it.
  public static func provider(_ id: String) -> AggregateRef { AggregateRef(kind: "provider", id: id) }
  /// Network activity reports of one sandbox (`id` = sandbox id): kept apart from the sandbox aggregate
  /// so that reports never contend with lifecycle transitions.
  public static func network(_ sandboxID: String) -> AggregateRef { AggregateRef(kind: "network", id: sandboxID) }
  /// Policy revisions of one sandbox (`id` = sandbox id) or the global policy (`id` = "").
  public static func policy(_ sandboxID: String) -> AggregateRef {
    AggregateRef(kind: "policy", id: sandboxID.isEmpty ? "global" : sandboxID)
  }
}

extension GatewayEvent.OneOf_Kind {
  /// The dotted event type name of this kind (``GatewayEvent/typeName``), e.g. `sandbox.requested`.
  public var typeName: String {
    switch self {
    case .gatewayInitialized: return "gateway.initialized"
    case .gatewayConfigured: return "gateway.configured"
    case .certificateIssued: return "certificate.issued"
    case .workspaceCreated: return "workspace.created"
    case .workspaceDeleted: return "workspace.deleted"
    case .sandboxTemplateCreated: return "template.created"
    case .sandboxTemplateDeleted: return "template.deleted"
    case .sandboxRequested: return "sandbox.requested"
    case .sandboxProvisioning: return "sandbox.provisioning"
    case .sandboxReady: return "sandbox.ready"
    case .sandboxFailed: return "sandbox.failed"
    case .sandboxStopping: return "sandbox.stopping"
    case .sandboxStopped: return "sandbox.stopped"
    case .sandboxStarting: return "sandbox.starting"
    case .sandboxDeleting: return "sandbox.deleting"
    case .sandboxDeleted: return "sandbox.deleted"
    case .sandboxMainProcessExited: return "sandbox.main_process_exited"
    case .sandboxConditionSet: return "sandbox.condition_set"
    case .sandboxNetworkDenials: return "sandbox.network_denials"
    case .providerCreated: return "provider.created"
    case .providerUpdated: return "provider.updated"
    case .providerCredentialRotated: return "provider.credential_rotated"
    case .providerDeleted: return "provider.deleted"
    case .sandboxProviderAttached: return "sandbox.provider_attached"
    case .sandboxProviderDetached: return "sandbox.provider_detached"
    case .policyRevisionSubmitted: return "policy.revision_submitted"
    case .policyRevisionLoaded: return "policy.revision_loaded"
    case .policyRevisionFailed: return "policy.revision_failed"
    case .policyRevisionSuperseded: return "policy.revision_superseded"
    case .globalPolicySet: return "policy.global_set"
    case .globalPolicyDeleted: return "policy.global_deleted"
    case .settingSet: return "setting.set"
    case .settingDeleted: return "setting.deleted"
    case .inferenceRouteSet: return "inference.route_set"
    case .inferenceRouteDeleted: return "inference.route_deleted"
    case .inferenceBundlePublished: return "inference.bundle_published"
    case .sshSessionCreated: return "ssh.session_created"
    case .sshSessionRevoked: return "ssh.session_revoked"
    case .auditCheckpoint: return "audit.checkpoint"
    case .accessRefused: return "audit.access_refused"
    case .credentialsDisclosed: return "audit.credentials_disclosed"
    case .execStarted: return "exec.started"
    case .execEnded: return "exec.ended"
    case .gatewayRestored: return "gateway.restored"
    case .sshTunnelOpened: return "ssh.tunnel_opened"
    case .sshTunnelClosed: return "ssh.tunnel_closed"
    case .serviceExposed: return "service.exposed"
    case .serviceDeleted: return "service.deleted"
    case .credentialsSubstituted: return "audit.credentials_substituted"
    case .supervisorConnected: return "supervisor.connected"
    case .supervisorDisconnected: return "supervisor.disconnected"
    }
  }
}
