// The `provider-rotation` fixture scenario.

import Foundation
import OpenShellAPI
import Projections

extension Scenarios {
  /// Provider credential rotation, update, attachment and deletion (crypto-shredding).
  public static func providerRotation() -> Scenario {
    var b = ScenarioBuilder()
    var batches = bootstrap(&b)
    let claude = b.id("prv")
    batches.append(
      one(
        &b,
        .providerCreated(
          .with {
            $0.id = claude; $0.name = "claude"; $0.workspace = "default"; $0.type = "claude"; $0.dataKeyID = "dk-\(claude)"
            $0.credentials = [
              .with {
                $0.key = "ANTHROPIC_API_KEY"; $0.sealed = ScenarioBuilder.sealForFixture("sk-ant-fixture-1", context: claude + "/1")
              }
            ]
          })))
    let gh = b.id("prv")
    batches.append(
      one(
        &b,
        .providerCreated(
          .with {
            $0.id = gh; $0.name = "github"; $0.workspace = "default"; $0.type = "github"; $0.dataKeyID = "dk-\(gh)"
            $0.config = ["host": "github.com"]
            $0.credentials = [
              .with {
                $0.key = "GITHUB_TOKEN"; $0.sealed = ScenarioBuilder.sealForFixture("ghp_fixture_1", context: gh + "/1")
              }
            ]
          })))
    let sbx = b.id("sbx")
    batches.append(
      one(
        &b,
        .sandboxRequested(
          .with {
            $0.id = sbx; $0.name = "coder"; $0.workspace = "default"; $0.providers = ["claude"]
          })))
    batches.append(
      one(
        &b,
        .sandboxProviderAttached(
          .with {
            $0.sandboxID = sbx; $0.provider = "github"
          })))
    for n in 2...3 {
      batches.append(
        one(
          &b,
          .providerCredentialRotated(
            .with {
              $0.id = claude
              $0.credential = .with {
                $0.key = "ANTHROPIC_API_KEY"; $0.sealed = ScenarioBuilder.sealForFixture("sk-ant-fixture-\(n)", context: claude + "/\(n)")
              }
            }), actor: n == 2 ? "operator:CN=alice" : "operator:CN=bob"))
    }
    batches.append(
      one(
        &b,
        .providerUpdated(
          .with {
            $0.id = gh; $0.setConfig = ["org": "nvidia"]; $0.removedConfig = ["host"]
          })))
    batches.append(
      one(
        &b,
        .sandboxProviderDetached(
          .with {
            $0.sandboxID = sbx; $0.provider = "github"
          })))
    batches.append(
      one(
        &b,
        .providerDeleted(
          .with {
            $0.id = gh; $0.name = "github"; $0.workspace = "default"
          })))
    return Scenario(name: "provider-rotation", summary: "providers created, rotated twice, updated, attached/detached, deleted", batches: batches)
  }
}
