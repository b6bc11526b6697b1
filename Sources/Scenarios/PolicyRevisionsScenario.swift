// The `policy-revisions` fixture scenario and the sample policy it submits.

import Crypto
import Foundation
import OpenShellAPI
import Projections
import SwiftProtobuf

extension Scenarios {
  /// Policy revisions for one sandbox (loaded, failed, superseded), a global policy, settings.
  public static func policyRevisions() -> Scenario {
    var b = ScenarioBuilder()
    var batches = bootstrap(&b)
    let sbx = b.id("sbx")
    batches.append(
      one(
        &b,
        .sandboxRequested(
          .with {
            $0.id = sbx; $0.name = "policy-box"; $0.workspace = "default"
          })))
    batches.append(one(&b, .sandboxReady(.with { $0.id = sbx }), actor: "system"))
    let supervisor = "sandbox:\(sbx)"
    for (version, host) in [(UInt32(1), "api.github.com"), (2, "pypi.org"), (3, "api.anthropic.com")] {
      let policy = samplePolicy(host: host)
      batches.append(
        one(
          &b,
          .policyRevisionSubmitted(
            .with {
              $0.sandboxID = sbx; $0.version = version; $0.policy = policy; $0.contentSha256 = hex(SHA256.hash(data: policy))
            })))
      if version == 2 {
        batches.append(
          one(
            &b,
            .policyRevisionFailed(
              .with {
                $0.sandboxID = sbx; $0.version = 2; $0.message = "network_policies.pypi: binary path must be absolute"
              }), actor: supervisor))
      } else {
        batches.append(
          one(
            &b,
            .policyRevisionLoaded(
              .with {
                $0.sandboxID = sbx; $0.version = version
              }), actor: supervisor))
        if version == 3 {
          batches.append(
            one(
              &b,
              .policyRevisionSuperseded(
                .with {
                  $0.sandboxID = sbx; $0.version = 1; $0.supersededBy = 3
                }), actor: supervisor))
        }
      }
    }
    let global = samplePolicy(host: "internal.example.com")
    batches.append(
      one(
        &b,
        .globalPolicySet(
          .with {
            $0.version = 1; $0.policy = global; $0.contentSha256 = hex(SHA256.hash(data: global))
          })))
    batches.append(
      one(
        &b,
        .settingSet(
          .with {
            $0.scope = "global"; $0.key = "log_level"; $0.value = "debug"
          })))
    batches.append(
      one(
        &b,
        .settingSet(
          .with {
            $0.scope = sbx; $0.key = "proxy_timeout"; $0.value = "30"
          })))
    batches.append(one(&b, .globalPolicyDeleted(.with { $0.version = 1 })))
    batches.append(
      one(
        &b,
        .settingDeleted(
          .with {
            $0.scope = "global"; $0.key = "log_level"
          })))
    return Scenario(
      name: "policy-revisions", summary: "three sandbox policy revisions (loaded, failed, loaded+superseded), global policy set and deleted, settings",
      batches: batches)
  }

  static func samplePolicy(host: String) -> Data {
    var p = Openshell_Sandbox_V1_SandboxPolicy()
    p.version = 1
    p.filesystem = .with {
      $0.includeWorkdir = true; $0.readOnly = ["/usr", "/lib", "/etc"]; $0.readWrite = ["/sandbox", "/tmp"]
    }
    p.landlock = .with { $0.compatibility = "best_effort" }
    p.process = .with {
      $0.runAsUser = "sandbox"; $0.runAsGroup = "sandbox"
    }
    var rule = Openshell_Sandbox_V1_NetworkPolicyRule()
    rule.name = host
    var endpoint = Openshell_Sandbox_V1_NetworkEndpoint()
    endpoint.host = host
    endpoint.port = 443
    rule.endpoints = [endpoint]
    p.networkPolicies = [host: rule]
    var options = BinaryEncodingOptions()
    options.useDeterministicOrdering = true
    return (try? p.serializedBytes(options: options) as Data) ?? Data()
  }
}
