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
  public var lastSeq: UInt64
  public var gateway: GatewayRecord?
  public var certificates: [CertificateRecord]
  public var workspaces: [String]
  public var sandboxes: [SandboxView]
  public var templates: [TemplateView]
  public var providers: [ProviderView]
  public var globalPolicy: PolicyView?
  public var settings: [String: [String: String]]
  public var inferenceRoutes: [InferenceRouteRecord]
  public var inferenceBundleRevision: String

  public struct SandboxView: Codable, Sendable {
    public var id, name, workspace, phase: String
    public var labels: [String: String]
    public var providers: [String]
    public var conditions: [ConditionRecord]
    public var exitCode: Int32?
    public var created: String
    public var resourceVersion: UInt64
    public var spec: JSONValue
    public var policy: PolicyView?
  }

  public struct TemplateView: Codable, Sendable {
    public var id, name, workspace: String
    public var labels: [String: String]
    public var spec: JSONValue
  }

  public struct ProviderView: Codable, Sendable {
    public var id, name, workspace, type: String
    public var config: [String: String]
    /// Credential key → "<sealed>" (values are never rendered).
    public var credentials: [String: String]
    public var lastRotationSeq: [String: UInt64]
    public var resourceVersion: UInt64
  }

  public struct PolicyView: Codable, Sendable {
    public var activeVersion: UInt32
    public var revisions: [Revision]
    public struct Revision: Codable, Sendable {
      public var version: UInt32
      public var status: String
      public var sha256: String
      public var message: String
      public var policy: JSONValue
    }
  }

  public init(_ s: GatewayState) {
    lastSeq = s.lastSeq
    gateway = s.gateway
    certificates = s.certificates.values.sorted { ($0.issuedNs, $0.fingerprint) < ($1.issuedNs, $1.fingerprint) }
    workspaces = Array(Set(s.workspaces.keys).union([GatewayState.defaultWorkspace])).sorted()
    sandboxes = s.sandboxList(workspace: nil).map { sb in
      SandboxView(
        id: sb.id, name: sb.name, workspace: sb.workspace, phase: sb.phase.name, labels: sb.labels,
        providers: sb.providers, conditions: sb.conditions, exitCode: sb.exitCode, created: rfc3339(ns: sb.createdNs),
        resourceVersion: sb.resourceVersion,
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
