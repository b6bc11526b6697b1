import GRPCCore
import OpenShellAPI
import SwiftProtobuf

/// Size limits per field and per object, so that no caller can grow the log, the projection and every list
/// response without bound (issue 17: 60 CreateSandbox calls of ~4 MiB specs grew the log to 231 MB and made
/// `sandbox list` answer 162 MB). Kubernetes' object limits are the model (labels and annotations per object,
/// a bounded object size); every number here is documented in the error that enforces it.
///
/// A field over its limit is INVALID_ARGUMENT with a field violation naming the field and the limit; an
/// object whose serialized total is over its limit is RESOURCE_EXHAUSTED naming the limit. Names are covered
/// by ``NameRule`` (63 characters), each label by ``LabelRule`` (key 253, value 256), provider credentials
/// and config by `ProviderLimits`.
enum ObjectLimits {
  /// Labels per object (and annotations per object), each map counted separately.
  static let maxLabels = 64
  /// Environment variables per map (`spec.environment`, `spec.template.environment`, ExecSandbox).
  static let maxEnvironmentVariables = 256
  /// Bytes of one environment variable's value.
  static let maxEnvironmentValueBytes = 32 * 1024
  /// Bytes of one environment map (names and values).
  static let maxEnvironmentBytes = 128 * 1024
  /// Bytes of a serialized policy (`spec.policy`, UpdateConfig `policy`).
  static let maxPolicyBytes = 256 * 1024
  /// Bytes of a whole serialized sandbox spec (or template spec).
  static let maxSpecBytes = 512 * 1024
  /// Bytes of the items of one list response page; a page ends early (with a page token) rather than exceed it.
  /// Well under the 4 MiB every gRPC client accepts by default.
  static let maxListResponseBytes = 2 * 1024 * 1024

  /// - Throws: INVALID_ARGUMENT when `labels` has more than ``maxLabels`` entries.
  static func checkCount(_ labels: [String: String], field: String) throws {
    if labels.count > maxLabels {
      throw RPCErrors.invalidArgument(field: field, "at most \(maxLabels) entries per object (got \(labels.count))")
    }
  }

  /// - Throws: INVALID_ARGUMENT for too many variables, a value over ``maxEnvironmentValueBytes`` or a map
  ///   over ``maxEnvironmentBytes``.
  static func checkEnvironment(_ env: [String: String], field: String) throws {
    if env.count > maxEnvironmentVariables {
      throw RPCErrors.invalidArgument(field: field, "at most \(maxEnvironmentVariables) variables (got \(env.count))")
    }
    var total = 0
    for (k, v) in env {
      if v.utf8.count > maxEnvironmentValueBytes {
        throw RPCErrors.invalidArgument(field: field, "the value of \(k) is \(v.utf8.count) bytes; the limit is \(maxEnvironmentValueBytes) bytes per variable")
      }
      total += k.utf8.count + v.utf8.count
    }
    if total > maxEnvironmentBytes {
      throw RPCErrors.invalidArgument(field: field, "\(total) bytes of variables; the limit is \(maxEnvironmentBytes) bytes per environment")
    }
  }

  /// - Throws: INVALID_ARGUMENT for a policy over ``maxPolicyBytes``.
  static func checkPolicy(_ policy: some SwiftProtobuf.Message, field: String) throws {
    let size = (try? policy.serializedBytes() as [UInt8])?.count ?? 0
    if size > maxPolicyBytes {
      throw RPCErrors.invalidArgument(field: field, "the policy is \(size) bytes; the limit is \(maxPolicyBytes) bytes")
    }
  }

  /// - Throws: RESOURCE_EXHAUSTED for a serialized spec over ``maxSpecBytes``.
  static func checkSpecTotal(_ spec: some SwiftProtobuf.Message, field: String) throws {
    let size = (try? spec.serializedBytes() as [UInt8])?.count ?? 0
    if size > maxSpecBytes {
      throw RPCError(code: .resourceExhausted, message: "\(field): the spec is \(size) bytes; the limit is \(maxSpecBytes) bytes per object")
    }
  }

  /// Every limit of a CreateSandbox request.
  static func checkSandbox(_ request: Openshell_V1_CreateSandboxRequest) throws {
    try checkCount(request.labels, field: "labels")
    try checkCount(request.annotations, field: "annotations")
    try checkEnvironment(request.spec.environment, field: "spec.environment")
    try checkEnvironment(request.spec.template.environment, field: "spec.template.environment")
    if request.spec.hasPolicy { try checkPolicy(request.spec.policy, field: "spec.policy") }
    try checkSpecTotal(request.spec, field: "spec")
  }
}
