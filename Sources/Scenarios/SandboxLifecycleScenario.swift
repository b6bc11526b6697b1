// The `sandbox-lifecycle` fixture scenario.

import Foundation
import OpenShellAPI
import Projections

extension Scenarios {
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
}
