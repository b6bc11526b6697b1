import EventLog
import Foundation
import GRPCCore
import OpenShellAPI
import Projections

/// The `openshell.v1.OpenShell` service: every mutation is validated against the projection and
/// appended as events; every read is served from the projection. RPCs not implemented here answer
/// UNIMPLEMENTED (Unimplemented.swift).
public struct OpenShellService: Openshell_V1_OpenShell.SimpleServiceProtocol, Sendable {
  let store: GatewayStore
  let driver: (any ComputeDriver)?
  let version: String
  /// Supervisor sessions, relays and sandbox logs (nil: no sandbox ever runs, e.g. in unit tests).
  let hub: SupervisorHub?
  /// Envelope encryption of provider credentials (nil: provider RPCs that need secrets fail).
  let vault: SecretVault?
  /// Provider changes that affect sandbox environments (delivery to supervisors subscribes).
  /// Audit records of reads and sessions (credential disclosures, exec sessions).
  var audit: AuditRecorder { AuditRecorder(store: store) }
  /// SSH session lifetime and the address CreateSshSession returns.
  public let ssh: SSHTunnelSettings
  /// Supervisor connects and disconnects (bounded per sandbox; see ``SupervisorSessionAudit``).
  let supervisorSessions: SupervisorSessionAudit

  /// - Parameters:
  ///   - driver: the compute driver; nil = none configured (sandboxes stay PROVISIONING; stop,
  ///     start and delete complete at once because nothing runs).
  public init(
    store: GatewayStore, driver: (any ComputeDriver)?, version: String, hub: SupervisorHub? = nil,
    vault: SecretVault? = nil, ssh: SSHTunnelSettings = SSHTunnelSettings()
  ) {
    self.ssh = ssh
    self.supervisorSessions = SupervisorSessionAudit(log: store.log)
    self.store = store
    self.driver = driver
    self.version = version
    self.hub = hub
    self.vault = vault
  }

  // MARK: identity

  /// The caller; sandboxes (supervisor identities) may not call user RPCs.
  func userCaller(_ rpc: String) throws -> CallerIdentity {
    let caller = CallerIdentity.current
    if case .sandbox(let id) = caller.kind {
      throw RPCErrors.permissionDenied("\(rpc) is not available to sandbox identities (sandbox \(id))")
    }
    return caller
  }

  /// Resolves `workspace_scope` for a single-object RPC: unset → `default`; all_workspaces → invalid.
  func workspace(_ scope: Openshell_Datamodel_V1_WorkspaceSelector, _ state: GatewayState, field: String = "workspace_scope") throws -> String {
    switch scope.selection {
    case nil: return GatewayState.defaultWorkspace
    case .workspace(let w):
      let name = w.isEmpty ? GatewayState.defaultWorkspace : w
      guard state.workspace(named: name) != nil else { throw RPCErrors.notFound("workspace \(name)") }
      return name
    case .allWorkspaces:
      throw RPCErrors.invalidArgument(field: field, "all_workspaces is only valid for list RPCs")
    }
  }

  /// Resolves `workspace_scope` for list RPCs: nil = every workspace.
  func listScope(_ scope: Openshell_Datamodel_V1_WorkspaceSelector, _ state: GatewayState) throws -> String? {
    if case .allWorkspaces = scope.selection { return nil }
    return try workspace(scope, state)
  }

  func selector(_ text: String) throws -> LabelSelector {
    guard let s = LabelSelector(text) else { throw RPCErrors.invalidArgument(field: "label_selector", "invalid selector \(text.debugDescription)") }
    return s
  }

  // MARK: health and info

  /// `Health` RPC: always HEALTHY with the server version. Any caller, including sandboxes; records nothing.
  public func health(request: Openshell_V1_HealthRequest, context: ServerContext) async throws -> Openshell_V1_HealthResponse {
    .with {
      $0.status = .healthy; $0.version = version
    }
  }

  /// `GetGatewayInfo` RPC: status, gateway version and the configured compute driver. Callers: operators and
  /// users, not sandboxes.
  public func getGatewayInfo(request: Openshell_V1_GetGatewayInfoRequest, context: ServerContext) async throws -> Openshell_V1_GetGatewayInfoResponse {
    _ = try userCaller("GetGatewayInfo")
    return .with {
      $0.status = .healthy
      $0.gatewayVersion = version
      if let driver { $0.computeDrivers = [.with { $0.name = driver.name }] }
    }
  }
}
