import Foundation

/// The gateway's current state: a pure function of the event log (see `GatewayState.apply`).
///
/// Sandbox log lines are deliberately *not* events: they are high-volume, short-lived and not part
/// of the gateway's state. They are kept per sandbox, bounded, outside the main log (see the compute
/// driver's log store). The main log holds only state changes.
///
/// Every collection is keyed so that encoding with sorted keys (`SnapshotCodec`) is byte-identical
/// for the same log on any machine. Timestamps are ns since the Unix epoch (UTC) taken from the
/// events, never from a clock.
public struct GatewayState: Codable, Equatable, Sendable {
  /// Sequence number of the last applied record (0 = empty log).
  public var lastSeq: UInt64 = 0
  public var gateway: GatewayRecord?
  /// Certificates issued by the gateway CA, by SHA-256 fingerprint (hex).
  public var certificates: [String: CertificateRecord] = [:]
  /// Fingerprint of the newest certificate per role (`ca`, `server`, `operator`, `sandbox:<id>`).
  public var activeCertificates: [String: String] = [:]
  /// Workspaces by name. The `default` workspace is implicit: it always exists (`workspace(named:)`).
  public var workspaces: [String: WorkspaceRecord] = [:]
  /// Sandboxes by id. Deleted sandboxes leave the state (history stays in the log).
  public var sandboxes: [String: SandboxRecord] = [:]
  /// Sandbox templates by id.
  public var templates: [String: TemplateRecord] = [:]
  /// Providers by id. Credential values are sealed; their data keys live outside the log.
  public var providers: [String: ProviderRecord] = [:]
  /// Policy revisions per sandbox id.
  public var policies: [String: PolicyHistory] = [:]
  /// The global policy history (overrides every sandbox while set).
  public var globalPolicy = PolicyHistory()
  /// Whether a global policy is currently set.
  public var globalPolicyActive = false
  /// Settings by scope (`global` or a sandbox id), then key.
  public var settings: [String: [String: String]] = [:]
  /// Inference routes by route name (`inference.local`, `sandbox-system`).
  public var inferenceRoutes: [String: InferenceRouteRecord] = [:]
  /// Revision hash of the latest published inference bundle.
  public var inferenceBundleRevision = ""
  /// SSH sessions by id (token hashes only).
  public var sshSessions: [String: SshSessionRecord] = [:]
  /// Name index: `sandbox/<workspace>/<name>`, `template/…`, `provider/…` → id of the live object.
  /// Derived from the same events as the objects, so lookups by name are O(1).
  public var nameIndex: [String: String] = [:]
  /// Request ids already applied, with the first seq they produced; makes retried mutations idempotent.
  /// Bounded: the newest ``requestWindow`` ids are kept (a retry older than that is a new request).
  public var requests: [String: UInt64] = [:]
  /// How many request ids ``requests`` keeps: 100,000 (pruned to this when it exceeds it by 10 %). Clients
  /// retry within seconds (the SDK and CLI retry an RPC they did not get an answer to), far inside it.
  public static let requestWindow = 100_000
  /// Seq of the newest record of one of ``providerChangeTypes`` (0 = none yet). The gateway's provider change
  /// feeds compare it with their checkpoints at start, so they resume at the head instead of rescanning the
  /// log when nothing is pending (issue 14: restart on a 1M-event log).
  public var providerChangeSeq: UInt64 = 0
  /// The record types that change a sandbox's provider environment (the gateway's `ProviderChangeFeed`).
  public static let providerChangeTypes: Set<String> = [
    "provider.created", "provider.updated", "provider.credential_rotated", "provider.deleted",
    "sandbox.provider_attached", "sandbox.provider_detached",
  ]

  public init() {}

  /// Name of the workspace every object lands in when none is given (OpenShell: `default`).
  public static let defaultWorkspace = "default"
}

public struct GatewayRecord: Codable, Equatable, Sendable {
  public var name: String
  public var id: String
  public var serverVersion: String
  public var initializedNs: UInt64
  public var port: UInt32 = 0
  public var authMode: String = ""
  public var gpu = false
  public var registryUsername = ""
  public var gatewayHosts: [String] = []
}

public struct CertificateRecord: Codable, Equatable, Sendable {
  public var role: String
  public var subject: String
  public var fingerprint: String
  public var serialHex: String
  public var notBeforeNs: Int64
  public var notAfterNs: Int64
  public var subjectAltNames: [String]
  public var sandboxID: String
  public var issuedNs: UInt64
}

public struct WorkspaceRecord: Codable, Equatable, Sendable {
  public var id: String
  public var name: String
  public var labels: [String: String]
  public var createdNs: UInt64
  public var resourceVersion: UInt64
}

/// `openshell.v1.SandboxPhase` numbers (wire contract §6).
public enum SandboxPhase: Int, Codable, Sendable, CaseIterable {
  case unspecified = 0
  case provisioning = 1
  case ready = 2
  case error = 3
  case deleting = 4
  case unknown = 5
  case stopping = 6
  case stopped = 7
  case starting = 8
  case completed = 9

  public var name: String {
    switch self {
    case .unspecified: "Unspecified"
    case .provisioning: "Provisioning"
    case .ready: "Ready"
    case .error: "Error"
    case .deleting: "Deleting"
    case .unknown: "Unknown"
    case .stopping: "Stopping"
    case .stopped: "Stopped"
    case .starting: "Starting"
    case .completed: "Completed"
    }
  }
}

public struct ConditionRecord: Codable, Equatable, Sendable {
  public var type: String
  public var status: String
  public var reason: String
  public var message: String
  public var transitionNs: UInt64
}

public struct ServiceExposureRecord: Codable, Equatable, Sendable {
  public var service: String
  public var targetPort: UInt32
  public var authorizationMode: Int32
}

public struct SandboxRecord: Codable, Equatable, Sendable {
  public var id: String
  public var name: String
  public var workspace: String
  public var labels: [String: String]
  public var annotations: [String: String]
  /// Serialized `openshell.v1.SandboxSpec`.
  public var spec: Data
  public var templateName: String
  public var templateVersion: UInt64
  public var serviceExposures: [ServiceExposureRecord]
  /// Attached provider names, sorted.
  public var providers: [String]
  public var phase: SandboxPhase
  public var conditions: [ConditionRecord]
  public var createdNs: UInt64
  /// Seq of the last event that changed this sandbox (the object's resource version).
  public var resourceVersion: UInt64
  public var deletionRequestedNs: UInt64?
  public var exitCode: Int32?
  public var mainProcessStartedNs: Int64?
  public var restartCount: UInt32
  /// Wall-clock times (ns) of the newest `sandbox.starting` events, at most ``recentStartsKept``:
  /// the local driver caps automatic restarts with them (nil in snapshots written before it existed).
  public var recentStartsNs: [UInt64]?
  public var hostKeyFingerprint: String
  public var driver: String
  public var createdBy: String
  /// The spec's environment values, sealed under the sandbox's own data key (`spec` keeps the names with
  /// empty values); nil for sandboxes recorded before values were sealed, or without environment.
  public var sealedEnvironment: SealedEnvironmentRecord?
}

/// Environment values of a sandbox spec sealed with a per-sandbox data key (AES-GCM, see the gateway's
/// `SecretVault`); the key is destroyed with the sandbox (crypto-shredding). Source: issue 16.
public struct SealedEnvironmentRecord: Codable, Equatable, Sendable {
  /// Data key id in the gateway's vault (`dk-…`).
  public var keyID: String
  /// `spec.environment`: variable name → sealed value.
  public var environment: [String: Data]
  /// `spec.template.environment`: variable name → sealed value.
  public var templateEnvironment: [String: Data]

  public init(keyID: String, environment: [String: Data], templateEnvironment: [String: Data]) {
    self.keyID = keyID
    self.environment = environment
    self.templateEnvironment = templateEnvironment
  }
}

extension SandboxRecord {
  /// Ready-condition reason after the main process exited with code 0 (phase COMPLETED).
  public static let mainProcessCompleted = "MainProcessCompleted"
  /// Ready-condition reason after the main process failed (phase ERROR); the message names the code.
  public static let mainProcessFailed = "MainProcessExited"
  /// Ready-condition reason when the main process was ended by the OOM killer (phase ERROR).
  public static let mainProcessOOMKilled = "OOMKilled"
  /// How many start times ``recentStartsNs`` keeps.
  public static let recentStartsKept = 8
}

public struct TemplateRecord: Codable, Equatable, Sendable {
  public var id: String
  public var name: String
  public var workspace: String
  public var labels: [String: String]
  public var annotations: [String: String]
  /// Serialized `openshell.v1.SandboxWorkloadTemplateSpec`.
  public var spec: Data
  public var createdNs: UInt64
  public var resourceVersion: UInt64
}

public struct ProviderRecord: Codable, Equatable, Sendable {
  public var id: String
  public var name: String
  public var workspace: String
  public var type: String
  public var config: [String: String]
  /// Credential key → sealed value (AES-GCM under the provider data key `dataKeyID`).
  public var credentials: [String: Data]
  public var dataKeyID: String
  public var createdNs: UInt64
  public var updatedNs: UInt64
  public var resourceVersion: UInt64
  /// Credential key → seq of its last rotation.
  public var rotations: [String: UInt64]
}

/// `openshell.v1.PolicyStatus` numbers.
public enum PolicyStatus: Int, Codable, Sendable {
  case unspecified = 0
  case pending = 1
  case loaded = 2
  case failed = 3
  case superseded = 4
}

public struct PolicyRevisionRecord: Codable, Equatable, Sendable {
  public var version: UInt32
  public var contentSHA256: String
  /// Serialized `openshell.sandbox.v1.SandboxPolicy`.
  public var policy: Data
  public var status: PolicyStatus
  public var message: String
  public var submittedNs: UInt64
  public var loadedNs: UInt64?
}

public struct PolicyHistory: Codable, Equatable, Sendable {
  /// Revisions in version order (version 1 first).
  public var revisions: [PolicyRevisionRecord] = []
  /// Newest version with status `loaded` (0 = none).
  public var activeVersion: UInt32 = 0
  public init() {}

  public var latest: PolicyRevisionRecord? { revisions.last }
  public func revision(_ version: UInt32) -> PolicyRevisionRecord? {
    revisions.first { $0.version == version }
  }
}

public struct InferenceRouteRecord: Codable, Equatable, Sendable {
  public var route: String
  public var provider: String
  public var model: String
  public var timeoutSeconds: UInt32
  public var verified: Bool
  public var updatedNs: UInt64
  /// 1 for a new route, +1 on every set (nil in snapshots written before versions were tracked).
  public var version: UInt64?
}

public struct SshSessionRecord: Codable, Equatable, Sendable {
  public var id: String
  public var sandboxID: String
  public var tokenSHA256: String
  public var expiresNs: Int64
  public var revoked: Bool

  public init(id: String, sandboxID: String, tokenSHA256: String, expiresNs: Int64, revoked: Bool) {
    self.id = id
    self.sandboxID = sandboxID
    self.tokenSHA256 = tokenSHA256
    self.expiresNs = expiresNs
    self.revoked = revoked
  }
}

extension GatewayState {
  /// Looks up a workspace; `default` always exists (created implicitly at first use).
  public func workspace(named name: String) -> WorkspaceRecord? {
    if let w = workspaces[name] { return w }
    if name == Self.defaultWorkspace {
      return WorkspaceRecord(id: "default", name: name, labels: [:], createdNs: gateway?.initializedNs ?? 0, resourceVersion: 0)
    }
    return nil
  }

  /// The live sandbox with this name in this workspace, if any.
  public func sandbox(named name: String, workspace: String) -> SandboxRecord? {
    nameIndex["sandbox/\(workspace)/\(name)"].flatMap { sandboxes[$0] }
  }

  public func template(named name: String, workspace: String) -> TemplateRecord? {
    nameIndex["template/\(workspace)/\(name)"].flatMap { templates[$0] }
  }

  public func provider(named name: String, workspace: String) -> ProviderRecord? {
    nameIndex["provider/\(workspace)/\(name)"].flatMap { providers[$0] }
  }

  /// Sandboxes of a workspace (nil = all) ordered by (workspace, name) for stable pagination.
  public func sandboxList(workspace: String?) -> [SandboxRecord] {
    sandboxes.values.filter { workspace == nil || $0.workspace == workspace }
      .sorted { ($0.workspace, $0.name, $0.id) < ($1.workspace, $1.name, $1.id) }
  }
}
