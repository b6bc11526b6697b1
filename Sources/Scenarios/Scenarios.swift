// The fixture scenario registry (`Scenarios.all`), the common opening every scenario starts with, and the
// helpers the scenarios share. Each scenario is in its own file: SandboxLifecycleScenario.swift,
// ProviderRotationScenario.swift, PolicyRevisionsScenario.swift, InferenceRoutesScenario.swift.

import Crypto
import EventLog
import Foundation
import OpenShellAPI
import Projections

/// A scripted gateway history used for fixtures, tests and benchmarks.
public struct Scenario: Sendable {
  /// Directory name under `Fixtures/`.
  public let name: String
  /// One line describing what the scenario exercises.
  public let summary: String
  /// Batches of events; each batch is appended atomically, as one gateway command would.
  public let batches: [[NewEvent]]

  /// Every event of every batch, in append order.
  public var events: [NewEvent] { batches.flatMap { $0 } }
}

/// The fixture scenarios (Fixtures/<name>/), in a fixed order.
public enum Scenarios {
  /// The scenarios: sandbox lifecycle, provider rotation, policy revisions, inference routes (built anew on
  /// each access; deterministic).
  public static var all: [Scenario] { [sandboxLifecycle(), providerRotation(), policyRevisions(), inferenceRoutes()] }

  /// The scenario with this ``Scenario/name``; nil when there is none.
  public static func named(_ name: String) -> Scenario? { all.first { $0.name == name } }

  /// Common opening: gateway initialised, configured, CA/server/operator certificates issued.
  static func bootstrap(_ b: inout ScenarioBuilder) -> [[NewEvent]] {
    let events = b.batch { batch in
      batch.emit(
        .gatewayInitialized(
          .with {
            $0.gatewayName = "openshell"; $0.gatewayID = "gw-fixture"; $0.serverVersion = "0.1.0"
          }), actor: "system")
      batch.emit(
        .gatewayConfigured(
          .with {
            $0.port = 8080; $0.authMode = "mtls"; $0.bindAddress = "127.0.0.1"
          }), actor: "system")
      for (role, subject) in [("ca", "CN=openshell-gateway-ca"), ("server", "CN=openshell-gateway"), ("operator", "CN=openshell-operator,OU=operator")] {
        batch.emit(
          .certificateIssued(
            .with {
              $0.role = role
              $0.subject = subject
              $0.fingerprintSha256 = hex(SHA256.hash(data: Data(("fixture-" + role).utf8)))
              $0.serialHex = String(format: "%02x", role.count)
              $0.notBeforeNs = Int64(ScenarioBuilder.epochNs)
              $0.notAfterNs = Int64(ScenarioBuilder.epochNs) + 825 * 86_400 * 1_000_000_000
              if role == "server" { $0.subjectAltNames = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"] }
            }), actor: "system")
      }
    }
    return [events]
  }

  static func one(_ b: inout ScenarioBuilder, _ kind: GatewayEvent.OneOf_Kind, actor: String? = nil) -> [NewEvent] {
    let i = b.emit(kind, actor: actor)
    return [b.events[i]]
  }

  static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
    digest.map { String(format: "%02x", $0) }.joined()
  }
}

extension GatewayEvent.OneOf_Kind {
  /// Outcomes reported by the compute driver rather than requested by a user.
  var isDriverOutcome: Bool {
    switch self {
    case .sandboxProvisioning, .sandboxReady, .sandboxFailed, .sandboxStopped, .sandboxMainProcessExited, .sandboxDeleted: true
    default: false
    }
  }
}
