import Foundation
import OpenShellAPI
import Projections
import SwiftProtobuf
import Yams

/// A redacted, readable view of `GatewayState` for `openshell-replay state`.
///
/// Credential values are never shown (only key names and when each was last rotated); they are
/// sealed in the log and their data keys are not available to the replay tool. Contract messages
/// stored as bytes (sandbox specs, policies) are decoded to their protobuf JSON form.
public struct StateView: Codable, Sendable {
  /// Seq of the last applied record.
  public var lastSeq: UInt64
  /// Gateway identity and configuration; nil before `gateway.initialized`.
  public var gateway: GatewayRecord?
  /// Issued certificates, oldest first (by issue time, then fingerprint).
  public var certificates: [CertificateRecord]
  /// Workspace names, sorted; always includes `default`.
  public var workspaces: [String]
  /// Live sandboxes, sorted by (workspace, name, id).
  public var sandboxes: [SandboxView]
  /// Templates, sorted by (workspace, name).
  public var templates: [TemplateView]
  /// Providers, sorted by (workspace, name); credential values redacted.
  public var providers: [ProviderView]
  /// The global policy history; nil when none was ever set.
  public var globalPolicy: PolicyView?
  /// Settings by scope (`global` or a sandbox id), then key → value.
  public var settings: [String: [String: String]]
  /// Inference routes, sorted by route name.
  public var inferenceRoutes: [InferenceRouteRecord]
  /// Revision hash of the latest published inference bundle; empty when none.
  public var inferenceBundleRevision: String

  /// One sandbox, with its spec decoded to protobuf JSON.
  public struct SandboxView: Codable, Sendable {
    /// Sandbox id, name, workspace, and phase by name (`Ready`, …).
    public var id, name, workspace, phase: String
    /// User labels, key → value.
    public var labels: [String: String]
    /// Attached provider names, sorted.
    public var providers: [String]
    /// Conditions, one per type, sorted by type.
    public var conditions: [ConditionRecord]
    /// Exit code of the main process; nil while it runs or before it started.
    public var exitCode: Int32?
    /// Creation time, RFC 3339 UTC with milliseconds.
    public var created: String
    /// The caller identity that created the sandbox (e.g. `operator:CN=alice`); nil (left out) when the
    /// log does not record it (sandboxes created before `sandbox.requested` carried it).
    public var createdBy: String?
    /// Seq of the last event that changed the sandbox.
    public var resourceVersion: UInt64
    /// `openshell.v1.SandboxSpec` as protobuf JSON (`{}` when empty).
    public var spec: JSONValue
    /// The sandbox's policy history; nil when no revision was submitted.
    public var policy: PolicyView?
  }

  /// One template, with its spec decoded to protobuf JSON.
  public struct TemplateView: Codable, Sendable {
    /// Template id, name and workspace.
    public var id, name, workspace: String
    /// User labels, key → value.
    public var labels: [String: String]
    /// `openshell.v1.SandboxWorkloadTemplateSpec` as protobuf JSON.
    public var spec: JSONValue
  }

  /// One provider; credential values are replaced by `<sealed>`.
  public struct ProviderView: Codable, Sendable {
    /// Provider id, name, workspace and type (e.g. `openai`).
    public var id, name, workspace, type: String
    /// Non-secret configuration, key → value.
    public var config: [String: String]
    /// Credential key → "<sealed>" (values are never rendered).
    public var credentials: [String: String]
    /// Credential key → seq of its last rotation (keys never rotated are absent).
    public var lastRotationSeq: [String: UInt64]
    /// Seq of the last event that changed the provider.
    public var resourceVersion: UInt64
  }

  /// Policy revisions of a sandbox or of the global policy.
  public struct PolicyView: Codable, Sendable {
    /// Newest loaded version; 0 = none.
    public var activeVersion: UInt32
    /// Revisions in version order.
    public var revisions: [Revision]
    /// One revision, its policy decoded to protobuf JSON.
    public struct Revision: Codable, Sendable {
      /// Revision number, from 1.
      public var version: UInt32
      /// Status by case name: `pending`, `loaded`, `failed` or `superseded`.
      public var status: String
      /// Hex SHA-256 of the serialized policy.
      public var sha256: String
      /// Failure message; empty unless the revision failed.
      public var message: String
      /// `openshell.sandbox.v1.SandboxPolicy` as protobuf JSON.
      public var policy: JSONValue
    }
  }

  /// The redacted view of `s`: collections sorted for stable output, credential values never copied.
  public init(_ s: GatewayState) {
    lastSeq = s.lastSeq
    gateway = s.gateway
    certificates = s.certificates.values.sorted { ($0.issuedNs, $0.fingerprint) < ($1.issuedNs, $1.fingerprint) }
    workspaces = Array(Set(s.workspaces.keys).union([GatewayState.defaultWorkspace])).sorted()
    sandboxes = s.sandboxList(workspace: nil).map { sb in
      SandboxView(
        id: sb.id, name: sb.name, workspace: sb.workspace, phase: sb.phase.name, labels: sb.labels,
        providers: sb.providers, conditions: sb.conditions, exitCode: sb.exitCode, created: rfc3339(ns: sb.createdNs),
        createdBy: sb.createdBy.isEmpty ? nil : sb.createdBy, resourceVersion: sb.resourceVersion,
        spec: JSONValue.decode(Openshell_V1_SandboxSpec.self, sb.spec),
        policy: s.policies[sb.id].map(Self.policyView))
    }
    templates = s.templates.values.sorted { ($0.workspace, $0.name) < ($1.workspace, $1.name) }.map {
      TemplateView(
        id: $0.id, name: $0.name, workspace: $0.workspace, labels: $0.labels,
        spec: JSONValue.decode(Openshell_V1_SandboxWorkloadTemplateSpec.self, $0.spec))
    }
    providers = s.providers.values.sorted { ($0.workspace, $0.name) < ($1.workspace, $1.name) }.map { p in
      ProviderView(
        id: p.id, name: p.name, workspace: p.workspace, type: p.type, config: p.config,
        credentials: Dictionary(uniqueKeysWithValues: p.credentials.keys.map { ($0, "<sealed>") }),
        lastRotationSeq: p.rotations, resourceVersion: p.resourceVersion)
    }
    globalPolicy = s.globalPolicy.revisions.isEmpty ? nil : Self.policyView(s.globalPolicy)
    settings = s.settings
    inferenceRoutes = s.inferenceRoutes.values.sorted { $0.route < $1.route }
    inferenceBundleRevision = s.inferenceBundleRevision
  }

  static func policyView(_ h: PolicyHistory) -> PolicyView {
    PolicyView(
      activeVersion: h.activeVersion,
      revisions: h.revisions.map {
        .init(
          version: $0.version, status: "\($0.status)", sha256: $0.contentSHA256, message: $0.message,
          policy: JSONValue.decode(Openshell_Sandbox_V1_SandboxPolicy.self, $0.policy))
      })
  }

  /// Pretty JSON with sorted keys.
  public func json() -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return (try? e.encode(self)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
  }

  /// YAML (Yams).
  public func yaml() throws -> String {
    try YAMLEncoder().encode(self)
  }
}

/// A JSON value, used to embed decoded protobuf messages in state views.
public indirect enum JSONValue: Codable, Sendable, Equatable {
  case null
  case bool(Bool)
  case number(Double)
  case string(String)
  case array([JSONValue])
  case object([String: JSONValue])

  /// Decodes serialized `M` bytes and converts its protobuf JSON form; `{}` for empty bytes,
  /// `{"undecodable": "<n> bytes"}` for bytes that are not an `M`.
  static func decode<M: SwiftProtobuf.Message>(_ type: M.Type, _ bytes: Data) -> JSONValue {
    if bytes.isEmpty { return .object([:]) }
    guard let message = try? M(serializedBytes: bytes), let json = try? message.jsonUTF8Data(),
      let any = try? JSONSerialization.jsonObject(with: json)
    else { return .object(["undecodable": .string("\(bytes.count) bytes")]) }
    return JSONValue(any)
  }

  init(_ any: Any) {
    switch any {
    case let b as Bool where type(of: any) == type(of: NSNumber(value: true)): self = .bool(b)
    case let n as NSNumber: self = .number(n.doubleValue)
    case let s as String: self = .string(s)
    case let a as [Any]: self = .array(a.map(JSONValue.init))
    case let o as [String: Any]: self = .object(o.mapValues(JSONValue.init))
    default: self = .null
    }
  }

  /// Decodes any JSON value (null, bool, number, string, array, object, tried in that order).
  public init(from decoder: any Swift.Decoder) throws {
    let c = try decoder.singleValueContainer()
    if c.decodeNil() {
      self = .null
    } else if let b = try? c.decode(Bool.self) {
      self = .bool(b)
    } else if let n = try? c.decode(Double.self) {
      self = .number(n)
    } else if let s = try? c.decode(String.self) {
      self = .string(s)
    } else if let a = try? c.decode([JSONValue].self) {
      self = .array(a)
    } else {
      self = .object(try c.decode([String: JSONValue].self))
    }
  }

  /// Encodes the value; a whole number below 10^15 in magnitude is written as an integer, not `1.0`.
  public func encode(to encoder: any Swift.Encoder) throws {
    var c = encoder.singleValueContainer()
    switch self {
    case .null: try c.encodeNil()
    case .bool(let b): try c.encode(b)
    case .number(let n): if n == n.rounded(), abs(n) < 1e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
    case .string(let s): try c.encode(s)
    case .array(let a): try c.encode(a)
    case .object(let o): try c.encode(o)
    }
  }
}
