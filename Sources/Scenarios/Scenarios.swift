import Crypto
import EventLog
import Foundation
import OpenShellAPI
import Projections
import SwiftProtobuf

/// A scripted gateway history used for fixtures, tests and benchmarks.
public struct Scenario: Sendable {
  /// Directory name under `Fixtures/`.
  public let name: String
  public let summary: String
  /// Batches of events; each batch is appended atomically, as one gateway command would.
  public let batches: [[NewEvent]]

  public var events: [NewEvent] { batches.flatMap { $0 } }
}

/// The fixture scenarios (Fixtures/<name>/), in a fixed order.
public enum Scenarios {
  public static var all: [Scenario] { [sandboxLifecycle(), providerRotation(), policyRevisions(), inferenceRoutes()] }

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

  /// Sandbox lifecycle: create → provisioning → ready → stop → start → exit → delete; a second
  /// sandbox reusing the deleted name; a failed sandbox; a workspace and a template.
  public static func sandboxLifecycle() -> Scenario {
    var b = ScenarioBuilder()
    var batches = bootstrap(&b)
    let ws = b.id("ws")
    batches.append(
      one(
        &b,
        .workspaceCreated(
          .with {
            $0.id = ws; $0.name = "research"; $0.labels = ["team": "ml"]
          })))
    let tpl = b.id("tpl")
    batches.append(
      one(
        &b,
        .sandboxTemplateCreated(
          .with {
            $0.id = tpl; $0.name = "python-dev"; $0.workspace = "default"; $0.labels = ["lang": "python"]
          })))
    let first = b.id("sbx")
    var spec = Openshell_V1_SandboxSpec()
    spec.command = ["claude"]
    spec.environment = ["EDITOR": "vi"]
    batches.append(
      one(
        &b,
        .sandboxRequested(
          .with {
            $0.id = first; $0.name = "happy-otter"; $0.workspace = "default"; $0.labels = ["app": "agent"]
            $0.spec = (try? spec.serializedData()) ?? Data()
          })))
    for kind: GatewayEvent.OneOf_Kind in [
      .sandboxProvisioning(
        .with {
          $0.id = first; $0.driver = "local"; $0.message = "starting supervisor"
        }),
      .sandboxReady(
        .with {
          $0.id = first; $0.mainProcessStartedNs = Int64(ScenarioBuilder.epochNs) + 30_000_000_000
        }),
      .sandboxStopping(
        .with {
          $0.id = first; $0.reason = "user request"
        }),
      .sandboxStopped(.with { $0.id = first }),
      .sandboxStarting(.with { $0.id = first }),
      .sandboxReady(.with { $0.id = first }),
      .sandboxMainProcessExited(
        .with {
          $0.id = first; $0.exitCode = 0
        }),
      .sandboxDeleting(.with { $0.id = first }),
      .sandboxDeleted(.with { $0.id = first }),
    ] {
      batches.append(one(&b, kind, actor: kind.isDriverOutcome ? "system" : nil))
    }
    let second = b.id("sbx")
    batches.append(
      one(
        &b,
        .sandboxRequested(
          .with {
            $0.id = second; $0.name = "happy-otter"; $0.workspace = "default"; $0.templateName = "python-dev"; $0.templateVersion = 1
          })))
    batches.append(
      one(
        &b,
        .sandboxProvisioning(
          .with {
            $0.id = second; $0.driver = "local"
          }), actor: "system"))
    batches.append(one(&b, .sandboxReady(.with { $0.id = second }), actor: "system"))
    let broken = b.id("sbx")
    batches.append(
      one(
        &b,
        .sandboxRequested(
          .with {
            $0.id = broken; $0.name = "broken-lynx"; $0.workspace = "research"
          })))
    batches.append(
      one(
        &b,
        .sandboxProvisioning(
          .with {
            $0.id = broken; $0.driver = "local"
          }), actor: "system"))
    batches.append(
      one(
        &b,
        .sandboxFailed(
          .with {
            $0.id = broken; $0.reason = "SupervisorExited"; $0.message = "supervisor exited with status 1 before reporting ready"
          }), actor: "system"))
    batches.append(
      one(
        &b,
        .sandboxTemplateDeleted(
          .with {
            $0.id = tpl; $0.name = "python-dev"; $0.workspace = "default"
          })))
    return Scenario(name: "sandbox-lifecycle", summary: "sandbox phases, name reuse, a failed sandbox, workspace and template", batches: batches)
  }

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
