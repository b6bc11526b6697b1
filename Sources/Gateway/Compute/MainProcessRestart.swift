import Foundation
import OpenShellAPI
import Projections

/// What the driver does after a sandbox's main process ended (phase COMPLETED or ERROR with the
/// Ready reason ``SandboxRecord/mainProcessCompleted`` / ``SandboxRecord/mainProcessFailed`` /
/// ``SandboxRecord/mainProcessOOMKilled``), following
/// `SandboxSpec.restart_policy` (OpenShell contract, `SandboxRestartPolicy`):
///
/// | policy | exit 0 | exit ≠ 0 |
/// |---|---|---|
/// | UNSPECIFIED / NEVER | stays COMPLETED | stays ERROR |
/// | ON_FAILURE | stays COMPLETED | restarted |
/// | ALWAYS | restarted | restarted |
///
/// A restart is recorded as `sandbox.condition_set` (type `Restarted`, reason `RestartPolicy`, the exit
/// code in the message) followed by `sandbox.starting` (which counts in `status.restart_count`); the
/// driver then starts a fresh supervisor and main process.
///
/// Crash-loop cap: at most ``limit`` starts within ``window``; the next exit turns the sandbox ERROR with
/// reason `RestartLimit` ("restarting too often") instead of restarting, so a crash loop appends at most
/// about 5 events per start (exit, `Restarted`, starting, certificate issued, ready), about 30 a minute, and
/// then stops. `sandbox start` starts it again (and counts as a start). Starts are counted from
/// `SandboxRecord.recentStartsNs` (the projection), so the cap holds across gateway restarts.
enum MainProcessRestart: Equatable {
  /// Nothing to do (no main-process exit, or the policy keeps the sandbox ended).
  case none
  /// Restart; `message` goes into the `Restarted` condition.
  case restart(message: String)
  /// Too many restarts: record ERROR `RestartLimit` with `message`.
  case giveUp(message: String)

  /// Starts allowed within ``window`` before the driver stops restarting.
  static let limit = 5
  /// The window of the crash-loop cap.
  static let window: Duration = .seconds(60)

  /// Decides for sandbox `s` at wall-clock time `nowNs` (ns since the epoch). Pure.
  static func decide(_ s: SandboxRecord, nowNs: UInt64) -> MainProcessRestart {
    guard s.phase == .completed || s.phase == .error, let code = s.exitCode,
      let ready = s.conditions.first(where: { $0.type == "Ready" }),
      [SandboxRecord.mainProcessCompleted, SandboxRecord.mainProcessFailed, SandboxRecord.mainProcessOOMKilled].contains(ready.reason)
    else { return .none }
    let policy = (try? Openshell_V1_SandboxSpec(serializedBytes: s.spec))?.restartPolicy ?? .unspecified
    let failed = ready.reason != SandboxRecord.mainProcessCompleted
    let name: String
    switch policy {
    case .always: name = "ALWAYS"
    case .onFailure where failed: name = "ON_FAILURE"
    default: return .none
    }
    let windowNs = UInt64(window.components.seconds) * 1_000_000_000
    let recent = (s.recentStartsNs ?? []).filter { $0 + windowNs > nowNs }.count
    if recent >= limit {
      return .giveUp(
        message:
          "restarting too often: \(recent) starts within \(window.components.seconds) s (restart_policy \(name), at most \(limit)); last exit code \(code)")
    }
    return .restart(message: "restart \(s.restartCount + 1): the main process exited with code \(code) (restart_policy \(name))")
  }
}

extension LocalComputeDriver {
  /// Applies ``MainProcessRestart`` to an ended sandbox whose processes were just stopped. The events
  /// are appended only if the sandbox is still in the same phase (a user's start/stop/delete wins).
  func applyRestartPolicy(_ s: SandboxRecord, _ store: GatewayStore) async throws {
    let nowNs = UInt64(Date().timeIntervalSince1970 * 1e9)
    switch MainProcessRestart.decide(s, nowNs: nowNs) {
    case .none:
      return
    case .restart(let message):
      let events = [
        GatewayEvent(
          .sandboxConditionSet(
            .with {
              $0.id = s.id; $0.type = "Restarted"; $0.status = "True"; $0.reason = "RestartPolicy"; $0.message = message
            })),
        GatewayEvent(.sandboxStarting(.with { $0.id = s.id })),
      ]
      if try await transition(s.id, from: [s.phase], events, store) { hub.logs.gateway(s.id, message) }
    case .giveUp(let message):
      let event = GatewayEvent(
        .sandboxFailed(
          .with {
            $0.id = s.id; $0.reason = "RestartLimit"; $0.message = message
          }))
      if try await transition(s.id, from: [s.phase], [event], store) { hub.logs.gateway(s.id, message, level: "ERROR") }
    }
  }
}
