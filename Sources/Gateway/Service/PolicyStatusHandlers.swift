// The supervisor leg of configuration: ReportPolicyStatus (a supervisor acknowledges a revision as loaded
// or failed) and the push of the effective configuration to connected supervisors.

import GRPCCore
import OpenShellAPI
import Projections

extension OpenShellService {
  /// `ReportPolicyStatus` RPC: a supervisor acknowledges a policy revision as LOADED or FAILED
  /// (`policy.revision_loaded`/`policy.revision_failed`, older revisions `policy.revision_superseded`).
  /// Callers: the sandbox itself only. INVALID_ARGUMENT for version 0 or another status.
  public func reportPolicyStatus(request: Openshell_V1_ReportPolicyStatusRequest, context: ServerContext) async throws
    -> Openshell_V1_ReportPolicyStatusResponse
  {
    let id = try sandboxCaller("ReportPolicyStatus", claimed: request.sandboxID)
    guard request.version > 0 else { throw RPCErrors.invalidArgument(field: "version", "version must be greater than 0") }
    guard request.status == .loaded || request.status == .failed else {
      throw RPCErrors.invalidArgument(field: "status", "status must be LOADED or FAILED")
    }
    let actor = CallerIdentity.current.sandboxID != nil ? CallerIdentity.current.actor : "sandbox:\(id)"
    let result = try await store.execute(actor: actor, requestID: "") { recorded in
      guard let sandbox = recorded.sandboxes[id] else { throw RPCErrors.notFound("sandbox \(id)") }
      // A sandbox recorded without its initial revision (older logs): recorded with this acknowledgement.
      let initial = ConfigModel.initialRevisionEvents(sandbox, recorded)
      var state = recorded
      for e in initial { state.apply(e, seq: recorded.lastSeq, timestampNs: 0) }
      let history = state.policies[id] ?? PolicyHistory()
      guard let r = history.revision(request.version) else {
        throw RPCError(code: .notFound, message: "policy revision \(request.version) of sandbox \(id) not found")
      }
      if request.status == .failed {
        guard r.status != .failed || r.message != request.loadError else {
          return initial.isEmpty ? Decision(events: [], noop: true) : Decision(events: initial)
        }
        return Decision(
          events: initial + [
            GatewayEvent(
              .policyRevisionFailed(
                .with {
                  $0.sandboxID = id; $0.version = r.version; $0.message = request.loadError
                }))
          ])
      }
      if r.status == .loaded { return initial.isEmpty ? Decision(events: [], noop: true) : Decision(events: initial) }
      if r.version < history.activeVersion {
        // A late acknowledgement of an older revision: it is already replaced.
        guard r.status != .superseded else { return initial.isEmpty ? Decision(events: [], noop: true) : Decision(events: initial) }
        return Decision(
          events: initial + [
            GatewayEvent(
              .policyRevisionSuperseded(
                .with {
                  $0.sandboxID = id; $0.version = r.version; $0.supersededBy = history.activeVersion
                }))
          ])
      }
      var events = [
        GatewayEvent(
          .policyRevisionLoaded(
            .with {
              $0.sandboxID = id; $0.version = r.version
            }))
      ]
      for old in history.revisions where old.version < r.version && (old.status == .pending || old.status == .loaded) {
        events.append(
          GatewayEvent(
            .policyRevisionSuperseded(
              .with {
                $0.sandboxID = id; $0.version = old.version; $0.supersededBy = r.version
              })))
      }
      return Decision(events: initial + events)
    }
    // A newly failed revision is no longer offered (``ConfigModel/snapshot(_:_:)``): the supervisor gets
    // the revision in force again, so one that starts with a revision it then rejects does not stay
    // without a network policy until its next reconnect.
    if request.status == .failed, !result.decision.noop { pushConfig([id], result.state) }
    return .init()
  }

  /// Pushes the current effective configuration to each sandbox's connected supervisor.
  func pushConfig(_ sandboxIDs: [String], _ state: GatewayState) {
    guard let hub else { return }
    for id in sandboxIDs {
      guard let s = state.sandboxes[id], hub.connectedInstance(id) != nil else { continue }
      let snapshot = ConfigModel.snapshot(s, state)
      hub.send(
        .with {
          $0.configUpdate = .with {
            $0.updateID = "sandbox-config-\(snapshot.configRevision)"
            $0.sandboxConfig = snapshot
          }
        }, to: id)
    }
  }
}
