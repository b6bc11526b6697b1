import Foundation
import OpenShellAPI
import Projections
import SwiftProtobuf

/// Projection records → wire-contract messages (openshell 0.1.5).
enum Wire {
  static func timestamp(ns: UInt64) -> Google_Protobuf_Timestamp {
    Google_Protobuf_Timestamp(seconds: Int64(ns / 1_000_000_000), nanos: Int32(ns % 1_000_000_000))
  }

  static func sandbox(_ s: SandboxRecord, state: GatewayState) -> Openshell_V1_Sandbox {
    sandbox(s, activePolicyVersion: state.policies[s.id]?.activeVersion ?? 0)
  }

  /// The wire form of `s` whose active policy revision is `activePolicyVersion` (0 = none): what
  /// ``sandbox(_:state:)`` reads from the state, for callers that hold no copy of the state.
  static func sandbox(_ s: SandboxRecord, activePolicyVersion: UInt32) -> Openshell_V1_Sandbox {
    var out = Openshell_V1_Sandbox()
    out.metadata.id = s.id
    out.metadata.name = s.name
    out.metadata.workspace = s.workspace
    out.metadata.labels = s.labels
    out.metadata.annotations = s.annotations
    out.metadata.createdTime = timestamp(ns: s.createdNs)
    out.metadata.resourceVersion = s.resourceVersion
    if let d = s.deletionRequestedNs { out.metadata.deletionTime = timestamp(ns: d) }
    out.spec = (try? Openshell_V1_SandboxSpec(serializedBytes: s.spec)) ?? Openshell_V1_SandboxSpec()
    SandboxEnvironmentSecrets.redact(&out.spec, s.sealedEnvironment)
    out.status.phase = Openshell_V1_SandboxPhase(rawValue: s.phase.rawValue) ?? .unknown
    out.status.conditions = s.conditions.map { c in
      var w = Openshell_V1_SandboxCondition()
      w.type = c.type
      w.status = c.status
      w.reason = c.reason
      w.message = c.message
      w.transitionTime = timestamp(ns: c.transitionNs)
      return w
    }
    out.status.currentPolicyVersion = activePolicyVersion
    if let code = s.exitCode { out.status.exitCode = code }
    out.status.restartCount = s.restartCount
    if let started = s.mainProcessStartedNs, started > 0 { out.status.mainProcessStartedTime = timestamp(ns: UInt64(started)) }
    out.hostKeyFingerprint = s.hostKeyFingerprint
    if !s.templateName.isEmpty {
      out.createdFromWorkloadTemplate.name = s.templateName
      out.createdFromWorkloadTemplate.resourceVersion = String(s.templateVersion)
    }
    return out
  }

  static func workspace(_ w: WorkspaceRecord) -> Openshell_Datamodel_V1_Workspace {
    var out = Openshell_Datamodel_V1_Workspace()
    out.metadata.id = w.id
    out.metadata.name = w.name
    out.metadata.labels = w.labels
    out.metadata.createdTime = timestamp(ns: w.createdNs)
    out.metadata.resourceVersion = w.resourceVersion
    out.status.phase = .active
    return out
  }

  static func template(_ t: TemplateRecord) -> Openshell_V1_SandboxWorkloadTemplate {
    var out = Openshell_V1_SandboxWorkloadTemplate()
    out.metadata.id = t.id
    out.metadata.name = t.name
    out.metadata.workspace = t.workspace
    out.metadata.labels = t.labels
    out.metadata.annotations = t.annotations
    out.metadata.createdTime = timestamp(ns: t.createdNs)
    out.metadata.resourceVersion = t.resourceVersion
    out.spec = (try? Openshell_V1_SandboxWorkloadTemplateSpec(serializedBytes: t.spec)) ?? Openshell_V1_SandboxWorkloadTemplateSpec()
    if !out.spec.hasWorkload { out.spec.workload = Openshell_V1_SandboxWorkloadConfig() }
    return out
  }

  static func deterministicBytes<M: SwiftProtobuf.Message>(_ m: M) -> Data {
    var o = BinaryEncodingOptions()
    o.useDeterministicOrdering = true
    return (try? m.serializedBytes(options: o) as Data) ?? Data()
  }
}

/// Readable, unique-enough sandbox names (`adjective-animal`), as OpenShell generates them.
enum NameGenerator {
  static let adjectives = [
    "happy", "brave", "calm", "eager", "fancy", "gentle", "jolly", "kind", "lively", "proud", "quick", "silly", "witty", "zesty", "bold", "bright", "clever",
    "daring", "keen", "merry",
  ]
  static let animals = [
    "otter", "lynx", "panda", "falcon", "badger", "heron", "koala", "marmot", "narwhal", "ocelot", "puffin", "quokka", "raven", "salmon", "tapir", "walrus",
    "yak", "zebra", "beaver", "gecko",
  ]

  static func generate(taken: (String) -> Bool) -> String {
    for attempt in 0..<200 {
      var name = "\(adjectives.randomElement()!)-\(animals.randomElement()!)"
      if attempt >= 20 { name += "-\(String(UInt32.random(in: 0..<0xffff), radix: 16))" }
      if !taken(name) { return name }
    }
    return "sandbox-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
  }
}
