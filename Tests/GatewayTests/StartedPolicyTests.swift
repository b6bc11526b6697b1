import Foundation
import OpenShellAPI
import PolicyKit
import Projections
import Testing

@testable import Gateway

/// The one reference for a sandbox's startup-only policy sections (``ConfigModel/startedPolicy(_:_:)``):
/// what the local driver starts it with and what live updates are checked against. A revision the
/// supervisor rejected never becomes it (logs written before the gateway refused such changes hold them).
@Suite struct StartedPolicyTests {
  static func state(_ events: [GatewayEvent]) -> GatewayState {
    var state = GatewayState()
    for (i, e) in events.enumerated() { state.apply(e, seq: UInt64(i + 1), timestampNs: UInt64(i + 1)) }
    return state
  }

  static func submitted(_ version: UInt32, _ p: Openshell_Sandbox_V1_SandboxPolicy) -> GatewayEvent {
    GatewayEvent(
      .policyRevisionSubmitted(
        .with {
          $0.sandboxID = "sb"; $0.version = version
          $0.contentSha256 = PolicyRules.hash(p); $0.policy = PolicyRules.canonicalBytes(p)
        }))
  }

  @Test("a failed revision is neither started with nor the live-update reference; a loaded one is")
  func failedRevisionIsNeverTheReference() throws {
    let requested = GatewayEvent(
      .sandboxRequested(
        .with {
          $0.id = "sb"; $0.name = "np2"; $0.workspace = "default"
        }))
    var narrowed = PolicyRules.restrictiveDefault
    narrowed.filesystem.readOnly.removeAll { $0 == "/app" || $0 == "/var/log" }
    let failed = GatewayEvent(
      .policyRevisionFailed(
        .with {
          $0.sandboxID = "sb"; $0.version = 1; $0.message = "filesystem_policy: filesystem policy differs"
        }))
    var state = Self.state([requested, Self.submitted(1, narrowed), failed])
    let s = try #require(state.sandboxes["sb"])
    #expect(state.policies["sb"]?.latest?.status == .failed)
    let started = ConfigModel.startedPolicy(s, state)
    #expect(started.source == "restrictive default policy")
    #expect(started.policy == PolicyRules.normalized(PolicyRules.restrictiveDefault))
    #expect(ConfinementPlanner.startupPolicy(s, state).policy.filesystem.readOnly.contains("/app"))
    // A network-only policy is no static change against it; the failed revision's filesystem is one.
    var networkOnly = Openshell_Sandbox_V1_SandboxPolicy()
    networkOnly.networkPolicies["local"] = .with {
      $0.endpoints = [
        .with {
          $0.host = "127.0.0.1"; $0.ports = [8080]
        }
      ]
    }
    #expect(PolicyRules.liveUpdateIssues(baseline: started.policy, proposed: networkOnly) == [])
    #expect(
      PolicyRules.liveUpdateIssues(baseline: started.policy, proposed: narrowed).map(\.path) == ["filesystem_policy.read_only", "filesystem_policy.read_only"])

    // A revision that did not fail is the reference (it is what the next start uses).
    state.apply(Self.submitted(2, networkOnly), seq: 10, timestampNs: 10)
    state.apply(
      GatewayEvent(
        .policyRevisionLoaded(
          .with {
            $0.sandboxID = "sb"; $0.version = 2
          })), seq: 11, timestampNs: 11)
    #expect(ConfigModel.startedPolicy(s, state).source == "policy v2")
    // A pending revision the supervisor will reject (L7 checks) is not started with either.
    var broken = narrowed
    broken.networkPolicies["all"] = .with {
      $0.endpoints = [
        .with {
          $0.host = "*"; $0.ports = [443]
        }
      ]
    }
    #expect(!PolicyRules.l7Issues(broken).isEmpty)
    state.apply(Self.submitted(3, broken), seq: 12, timestampNs: 12)
    #expect(state.policies["sb"]?.latest?.status == .pending)
    #expect(ConfigModel.startedPolicy(s, state).source == "policy v2")
    #expect(ConfinementPlanner.startupPolicy(s, state).source == "policy v2")
  }
}
