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
  /// Identity and start-up configuration of this gateway (`gateway.initialized`/`gateway.configured`); nil
  /// before the first of them.
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

  /// An empty state (seq 0): what a replay starts from.
  public init() {}

  /// Name of the workspace every object lands in when none is given (OpenShell: `default`).
  public static let defaultWorkspace = "default"
}

/// The gateway's identity and configuration, from `gateway.initialized` and the latest `gateway.configured`.
public struct GatewayRecord: Codable, Equatable, Sendable {
  /// Gateway name (renamed by `gateway.restored` after `openshell-replay restore`).
  public var name: String
  /// Gateway id chosen at initialization.
  public var id: String
  /// Server version string that initialized the log.
  public var serverVersion: String
  /// Time of `gateway.initialized`, ns since the Unix epoch (UTC).
  public var initializedNs: UInt64
  /// TCP port the gateway listens on (0 until configured).
  public var port: UInt32 = 0
  /// Transport security: `mtls`, `tls` or `plaintext`.
  public var authMode: String = ""
  /// Whether the gateway was started with GPU support enabled.
  public var gpu = false
  /// Container registry user name (the token is recorded only as a SHA-256 fingerprint, never here).
  public var registryUsername = ""
  /// Extra host names or IPs the server certificate covers (`--gateway-host`).
  public var gatewayHosts: [String] = []
}

/// One certificate issued by the gateway CA (`certificate.issued`): public parts only, never a private key.
public struct CertificateRecord: Codable, Equatable, Sendable {
  /// `ca`, `server`, `operator` or `sandbox`.
  public var role: String
  /// Subject distinguished name.
  public var subject: String
  /// Hex SHA-256 over the certificate's DER bytes (the key of ``GatewayState/certificates``).
  public var fingerprint: String
  /// Serial number, hex.
  public var serialHex: String
  /// Start of validity, ns since the Unix epoch.
  public var notBeforeNs: Int64
  /// End of validity, ns since the Unix epoch.
  public var notAfterNs: Int64
  /// Subject alternative names (DNS names and IPs).
  public var subjectAltNames: [String]
  /// Sandbox id for role `sandbox`; empty otherwise.
  public var sandboxID: String
  /// Time of the issuing event, ns since the Unix epoch.
  public var issuedNs: UInt64
}

/// An explicitly created workspace (`workspace.created`).
public struct WorkspaceRecord: Codable, Equatable, Sendable {
  /// Workspace id.
  public var id: String
  /// Workspace name (the key of ``GatewayState/workspaces``).
  public var name: String
  /// User labels, key → value.
  public var labels: [String: String]
  /// Creation time, ns since the Unix epoch.
  public var createdNs: UInt64
  /// Seq of the creating event (the object's resource version).
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

  /// Display name as OpenShell prints it (`Ready`, `Provisioning`, …).
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

/// One sandbox condition (Kubernetes style); a sandbox keeps one per type, sorted by type.
public struct ConditionRecord: Codable, Equatable, Sendable {
  /// Condition type, e.g. `Ready`.
  public var type: String
  /// `True`, `False` or `Unknown`.
  public var status: String
  /// Machine-readable reason in CamelCase, e.g. `SupervisorReady`, ``SandboxRecord/mainProcessFailed``.
  public var reason: String
  /// Human-readable detail; may be empty.
  public var message: String
  /// Time of the last change, ns since the Unix epoch.
  public var transitionNs: UInt64
}

/// A service of a sandbox exposed through the gateway (`service.exposed`).
public struct ServiceExposureRecord: Codable, Equatable, Sendable {
  /// Service name (unique per sandbox).
  public var service: String
  /// TCP port inside the sandbox the service forwards to.
  public var targetPort: UInt32
  /// `openshell.v1.ServiceAuthorizationMode` number: 1 strips the caller's credentials, 2 passes the bearer
  /// through.
  public var authorizationMode: Int32
}

/// A live sandbox as the log describes it (from `sandbox.requested` to `sandbox.deleted`).
public struct SandboxRecord: Codable, Equatable, Sendable {
  /// Sandbox id (random UUID, lowercase).
  public var id: String
  /// Name, unique per workspace among live sandboxes.
  public var name: String
  /// Workspace the sandbox belongs to.
  public var workspace: String
  /// User labels, key → value.
  public var labels: [String: String]
  /// User annotations, key → value.
  public var annotations: [String: String]
  /// Serialized `openshell.v1.SandboxSpec`.
  public var spec: Data
  /// Name of the template it was created from; empty when none.
  public var templateName: String
  /// Resource version of that template at creation; 0 when none.
  public var templateVersion: UInt64
  /// Exposed services, sorted by service name.
  public var serviceExposures: [ServiceExposureRecord]
  /// Attached provider names, sorted.
  public var providers: [String]
  /// Lifecycle phase (OpenShell's `SandboxPhase`).
  public var phase: SandboxPhase
  /// Conditions, one per type, sorted by type.
  public var conditions: [ConditionRecord]
  /// Time of `sandbox.requested`, ns since the Unix epoch.
  public var createdNs: UInt64
  /// Seq of the last event that changed this sandbox (the object's resource version).
  public var resourceVersion: UInt64
  /// Time deletion was requested (`sandbox.deleting`), ns since the Unix epoch; nil while not deleting.
  public var deletionRequestedNs: UInt64?
  /// Exit code of the main process from the last `sandbox.main_process_exited`; nil while it runs or before it
  /// started.
  public var exitCode: Int32?
  /// When the main process started, ns since the Unix epoch, as reported by the supervisor; nil before it did.
  public var mainProcessStartedNs: Int64?
  /// Number of `sandbox.starting` events (restarts after a stop or exit).
  public var restartCount: UInt32
  /// Wall-clock times (ns) of the newest `sandbox.starting` events, at most ``recentStartsKept``:
  /// the local driver caps automatic restarts with them (nil in snapshots written before it existed).
  public var recentStartsNs: [UInt64]?
  /// `SHA256:…` fingerprint of the sandbox's SSH host key, from `sandbox.ready`; empty before.
  public var hostKeyFingerprint: String
  /// Compute driver that runs the sandbox, e.g. `local` (from `sandbox.provisioning`).
  public var driver: String
  /// The caller identity that created the sandbox (`sandbox.requested`'s `created_by`, e.g.
  /// `operator:CN=alice`); empty for sandboxes recorded before the event carried it.
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

  /// Sealed values as `SandboxRequested` carries them; `keyID` names the data key that opens them.
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

/// A sandbox template (`template.created`).
public struct TemplateRecord: Codable, Equatable, Sendable {
  /// Template id.
  public var id: String
  /// Name, unique per workspace.
  public var name: String
  /// Workspace the template belongs to.
  public var workspace: String
  /// User labels, key → value.
  public var labels: [String: String]
  /// User annotations, key → value.
  public var annotations: [String: String]
  /// Serialized `openshell.v1.SandboxWorkloadTemplateSpec`.
  public var spec: Data
  /// Creation time, ns since the Unix epoch.
  public var createdNs: UInt64
  /// Seq of the creating event (the template's resource version).
  public var resourceVersion: UInt64
}

/// A provider (credentials and configuration for an external service) as the log describes it.
public struct ProviderRecord: Codable, Equatable, Sendable {
  /// Provider id.
  public var id: String
  /// Name, unique per workspace.
  public var name: String
  /// Workspace the provider belongs to.
  public var workspace: String
  /// Provider type, e.g. `openai` or `anthropic`.
  public var type: String
  /// Non-secret configuration, key → value (plaintext).
  public var config: [String: String]
  /// Credential key → sealed value (AES-GCM under the provider data key `dataKeyID`).
  public var credentials: [String: Data]
  /// Id of the vault data key that seals ``credentials``; destroyed with the provider.
  public var dataKeyID: String
  /// Creation time, ns since the Unix epoch.
  public var createdNs: UInt64
  /// Time of the last update or rotation, ns since the Unix epoch.
  public var updatedNs: UInt64
  /// Seq of the last event that changed this provider (its resource version).
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

/// One submitted policy revision of a sandbox or of the global policy.
public struct PolicyRevisionRecord: Codable, Equatable, Sendable {
  /// Revision number, 1 for the first, +1 per submission.
  public var version: UInt32
  /// Hex SHA-256 of the serialized policy.
  public var contentSHA256: String
  /// Serialized `openshell.sandbox.v1.SandboxPolicy`.
  public var policy: Data
  /// Where the revision stands: pending until the supervisor reports it loaded or failed.
  public var status: PolicyStatus
  /// Failure message from `policy.revision_failed`; empty otherwise.
  public var message: String
  /// Submission time, ns since the Unix epoch.
  public var submittedNs: UInt64
  /// When the supervisor reported it loaded, ns since the Unix epoch; nil until then.
  public var loadedNs: UInt64?
}

/// Policy revisions of one sandbox (or of the global policy) and which one is active.
public struct PolicyHistory: Codable, Equatable, Sendable {
  /// Revisions in version order (version 1 first).
  public var revisions: [PolicyRevisionRecord] = []
  /// Newest version with status `loaded` (0 = none).
  public var activeVersion: UInt32 = 0
  /// An empty history (no revisions, nothing active).
  public init() {}

  /// The newest submitted revision, whatever its status; nil when there is none.
  public var latest: PolicyRevisionRecord? { revisions.last }
  /// The revision with this version number; nil when there is none.
  public func revision(_ version: UInt32) -> PolicyRevisionRecord? {
    revisions.first { $0.version == version }
  }
}

/// The model route behind a sandbox-visible inference endpoint (`inference.route_set`).
public struct InferenceRouteRecord: Codable, Equatable, Sendable {
  /// Route name: `inference.local` or `sandbox-system`.
  public var route: String
  /// Name of the provider whose credentials the route uses.
  public var provider: String
  /// Model id sent upstream.
  public var model: String
  /// Upstream request timeout, seconds (0 = the default, 60 s; OpenShell: `inference set --timeout`).
  public var timeoutSeconds: UInt32
  /// Whether the endpoint was validated when the route was set (false after `--no-verify`).
  public var verified: Bool
  /// Time of the last set, ns since the Unix epoch.
  public var updatedNs: UInt64
  /// 1 for a new route, +1 on every set (nil in snapshots written before versions were tracked).
  public var version: UInt64?
}

/// An SSH session token handed out for a sandbox (`ssh.session_created`): its hash only, never the token.
public struct SshSessionRecord: Codable, Equatable, Sendable {
  /// Session id.
  public var id: String
  /// Id of the sandbox the session opens.
  public var sandboxID: String
  /// Hex SHA-256 of the session token.
  public var tokenSHA256: String
  /// Expiry, ns since the Unix epoch; 0 = never expires.
  public var expiresNs: Int64
  /// Whether `ssh.session_revoked` ended it.
  public var revoked: Bool

  /// A session record with every field given.
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

  /// The template with this name in this workspace, if any.
  public func template(named name: String, workspace: String) -> TemplateRecord? {
    nameIndex["template/\(workspace)/\(name)"].flatMap { templates[$0] }
  }

  /// The live provider with this name in this workspace, if any.
  public func provider(named name: String, workspace: String) -> ProviderRecord? {
    nameIndex["provider/\(workspace)/\(name)"].flatMap { providers[$0] }
  }

  /// Sandboxes of a workspace (nil = all) ordered by (workspace, name) for stable pagination.
  public func sandboxList(workspace: String?) -> [SandboxRecord] {
    sandboxes.values.filter { workspace == nil || $0.workspace == workspace }
      .sorted { ($0.workspace, $0.name, $0.id) < ($1.workspace, $1.name, $1.id) }
  }
}
