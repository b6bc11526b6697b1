// The `inference-routes` fixture scenario.

import Foundation
import OpenShellAPI
import Projections

extension Scenarios {
  /// Inference route changes and bundle publications.
  public static func inferenceRoutes() -> Scenario {
    var b = ScenarioBuilder()
    var batches = bootstrap(&b)
    let nv = b.id("prv")
    batches.append(
      one(
        &b,
        .providerCreated(
          .with {
            $0.id = nv; $0.name = "nvidia"; $0.workspace = "default"; $0.type = "nvidia"; $0.dataKeyID = "dk-\(nv)"
            $0.credentials = [
              .with {
                $0.key = "NVIDIA_API_KEY"; $0.sealed = ScenarioBuilder.sealForFixture("nvapi-fixture", context: nv)
              }
            ]
          })))
    let steps: [(String, String, String)] = [
      ("inference.local", "nvidia", "meta/llama-3.1-8b-instruct"),
      ("sandbox-system", "nvidia", "nvidia/nemotron-mini"),
      ("inference.local", "nvidia", "meta/llama-3.3-70b-instruct"),
    ]
    var revision = 0
    for (route, provider, model) in steps {
      revision += 1
      let rev = String(format: "rev-%04d", revision)
      batches.append(
        b.batch { batch in
          batch.emit(
            .inferenceRouteSet(
              .with {
                $0.route = route; $0.provider = provider; $0.model = model; $0.timeoutSeconds = 60; $0.verified = true
              }))
          batch.emit(
            .inferenceBundlePublished(
              .with {
                $0.revision = rev; $0.routes = ["inference.local", "sandbox-system"]
              }), actor: "system")
        })
    }
    batches.append(
      b.batch { batch in
        batch.emit(.inferenceRouteDeleted(.with { $0.route = "sandbox-system" }))
        batch.emit(
          .inferenceBundlePublished(
            .with {
              $0.revision = "rev-0004"; $0.routes = ["inference.local"]
            }), actor: "system")
      })
    return Scenario(name: "inference-routes", summary: "inference routes set, changed and deleted, with bundle publications", batches: batches)
  }
}
