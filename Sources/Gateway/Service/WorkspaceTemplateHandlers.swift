import EventLog
import Foundation
import GRPCCore
import OpenShellAPI
import Projections

extension OpenShellService {
  // MARK: workspaces (a `default` workspace always exists)

  /// `CreateWorkspace` RPC: records `workspace.created`. Callers: operators and users, not sandboxes.
  /// INVALID_ARGUMENT for a bad name or label; ALREADY_EXISTS when it exists (`default` always does).
  public func createWorkspace(request: Openshell_V1_CreateWorkspaceRequest, context: ServerContext) async throws -> Openshell_V1_CreateWorkspaceResponse {
    let caller = try userCaller("CreateWorkspace")
    try ObjectLimits.checkCount(request.labels, field: "labels")
    let result = try await store.execute(actor: caller.actor, requestID: request.requestID, rpc: "CreateWorkspace", target: request.name) { state in
      if let v = NameRule.violation(request.name) { throw RPCErrors.invalidArgument(field: "name", "workspace name \(request.name.debugDescription) \(v)") }
      guard state.workspace(named: request.name) == nil else { throw RPCErrors.alreadyExists("workspace \(request.name)") }
      for (k, v) in request.labels { if let m = LabelRule.violation(key: k, value: v) { throw RPCErrors.invalidArgument(field: "labels", m) } }
      let workspaceID = RandomID.uuid()
      let event = GatewayEvent(
        .workspaceCreated(
          .with {
            $0.id = workspaceID; $0.name = request.name; $0.labels = request.labels
          }))
      return Decision(
        events: [event], claims: ["workspace/\(request.name)"], expecting: [AggregateRef(kind: "workspace", id: request.name): .any], target: request.name)
    }
    guard let w = result.state.workspace(named: request.name) else { throw RPCErrors.notFound("workspace \(request.name)") }
    return .with { $0.workspace = Wire.workspace(w) }
  }

  /// `GetWorkspace` RPC: one workspace by name (`default` always exists). Callers: operators and users, not
  /// sandboxes.
  public func getWorkspace(request: Openshell_V1_GetWorkspaceRequest, context: ServerContext) async throws -> Openshell_V1_GetWorkspaceResponse {
    _ = try userCaller("GetWorkspace")
    let state = await store.state
    guard let w = state.workspace(named: request.name) else { throw RPCErrors.notFound("workspace \(request.name)") }
    return .with { $0.workspace = Wire.workspace(w) }
  }

  /// `ListWorkspaces` RPC: workspaces matching the label selector (the implicit `default` included), by name,
  /// paginated. Callers: operators and users, not sandboxes.
  public func listWorkspaces(request: Openshell_V1_ListWorkspacesRequest, context: ServerContext) async throws -> Openshell_V1_ListWorkspacesResponse {
    _ = try userCaller("ListWorkspaces")
    let state = await store.state
    let sel = try selector(request.labelSelector)
    var all = Array(state.workspaces.values)
    if state.workspaces[GatewayState.defaultWorkspace] == nil, let d = state.workspace(named: GatewayState.defaultWorkspace) { all.append(d) }
    let items = all.filter { sel.matches($0.labels) }.sorted { $0.name < $1.name }
    let page = try Pagination.page(items, key: \.name, pageSize: request.pageSize, pageToken: request.pageToken)
    return .with {
      $0.workspaces = page.items.map(Wire.workspace); $0.nextPageToken = page.next
    }
  }

  /// `DeleteWorkspace` RPC: records `workspace.deleted`. FAILED_PRECONDITION for `default` or a workspace that
  /// still holds sandboxes, templates or providers; NOT_FOUND unless `allow_missing`. Callers: operators and
  /// users, not sandboxes.
  public func deleteWorkspace(request: Openshell_V1_DeleteWorkspaceRequest, context: ServerContext) async throws -> Openshell_V1_DeleteWorkspaceResponse {
    let caller = try userCaller("DeleteWorkspace")
    let result = try await store.execute(actor: caller.actor, requestID: request.requestID, rpc: "DeleteWorkspace", target: request.name) { state in
      if request.name == GatewayState.defaultWorkspace { throw RPCErrors.failedPrecondition("the default workspace cannot be deleted") }
      guard let w = state.workspaces[request.name] else {
        if request.allowMissing { return Decision(events: []) }
        throw RPCErrors.notFound("workspace \(request.name)")
      }
      let sandboxes = state.sandboxList(workspace: w.name).map(\.name)
      let templates = state.templates.values.filter { $0.workspace == w.name }.map(\.name).sorted()
      let providers = state.providers.values.filter { $0.workspace == w.name }.map(\.name).sorted()
      if !(sandboxes.isEmpty && templates.isEmpty && providers.isEmpty) {
        var parts: [String] = []
        if !sandboxes.isEmpty { parts.append("sandboxes \(sandboxes.joined(separator: ", "))") }
        if !templates.isEmpty { parts.append("templates \(templates.joined(separator: ", "))") }
        if !providers.isEmpty { parts.append("providers \(providers.joined(separator: ", "))") }
        throw RPCErrors.failedPrecondition("workspace \(w.name) is not empty: \(parts.joined(separator: "; "))")
      }
      return Decision(
        events: [
          GatewayEvent(
            .workspaceDeleted(
              .with {
                $0.id = w.id; $0.name = w.name
              }))
        ], claims: ["workspace/\(w.name)"], target: w.name)
    }
    return .with { $0.outcome = result.decision.target.isEmpty ? .alreadyAbsent : .completed }
  }

  // MARK: sandbox templates

  /// `CreateSandboxTemplate` RPC: records `template.created` with the serialized template spec. Callers:
  /// operators and users, not sandboxes. ALREADY_EXISTS for a taken name in the workspace.
  public func createSandboxTemplate(request: Openshell_V1_CreateSandboxTemplateRequest, context: ServerContext) async throws
    -> Openshell_V1_SandboxTemplateResponse
  {
    let caller = try userCaller("CreateSandboxTemplate")
    try ObjectLimits.checkCount(request.template.metadata.labels, field: "template.metadata.labels")
    try ObjectLimits.checkSpecTotal(request.template, field: "template")
    let result = try await store.execute(
      actor: caller.actor, requestID: request.requestID, rpc: "CreateSandboxTemplate",
      target: Self.requestTarget(request.workspaceScope, request.template.metadata.name)
    ) { state in
      let ws = try workspace(request.workspaceScope, state)
      let meta = request.template.metadata
      if let v = NameRule.violation(meta.name) {
        throw RPCErrors.invalidArgument(field: "template.metadata.name", "template name \(meta.name.debugDescription) \(v)")
      }
      guard state.template(named: meta.name, workspace: ws) == nil else { throw RPCErrors.alreadyExists("sandbox template \(ws)/\(meta.name)") }
      for (k, v) in meta.labels { if let m = LabelRule.violation(key: k, value: v) { throw RPCErrors.invalidArgument(field: "template.metadata.labels", m) } }
      let id = RandomID.uuid()
      let event = GatewayEvent(
        .sandboxTemplateCreated(
          .with {
            $0.id = id
            $0.name = meta.name
            $0.workspace = ws
            $0.labels = meta.labels
            $0.annotations = meta.annotations
            $0.spec = Wire.deterministicBytes(request.template.spec)
          }))
      return Decision(events: [event], claims: ["template/\(ws)/\(meta.name)"], sharedClaims: ["workspace/\(ws)"], target: id)
    }
    guard let t = result.state.templates[result.decision.target] else { throw RPCErrors.notFound("sandbox template") }
    return .with { $0.template = Wire.template(t) }
  }

  /// `GetSandboxTemplate` RPC: one template by name in its workspace. Callers: operators and users, not
  /// sandboxes.
  public func getSandboxTemplate(request: Openshell_V1_GetSandboxTemplateRequest, context: ServerContext) async throws -> Openshell_V1_SandboxTemplateResponse {
    _ = try userCaller("GetSandboxTemplate")
    let state = await store.state
    let ws = try workspace(request.workspaceScope, state)
    guard let t = state.template(named: request.name, workspace: ws) else { throw RPCErrors.notFound("sandbox template \(ws)/\(request.name)") }
    return .with { $0.template = Wire.template(t) }
  }

  /// `ListSandboxTemplates` RPC: templates of a workspace (or all) matching the label selector, by (workspace,
  /// name), paginated. Callers: operators and users, not sandboxes.
  public func listSandboxTemplates(request: Openshell_V1_ListSandboxTemplatesRequest, context: ServerContext) async throws
    -> Openshell_V1_ListSandboxTemplatesResponse
  {
    _ = try userCaller("ListSandboxTemplates")
    let state = await store.state
    let scope = try listScope(request.workspaceScope, state)
    let sel = try selector(request.labelSelector)
    let items = state.templates.values.filter { (scope == nil || $0.workspace == scope) && sel.matches($0.labels) }
      .sorted { ($0.workspace, $0.name) < ($1.workspace, $1.name) }
    let page = try Pagination.page(
      items, key: { "\($0.workspace)/\($0.name)" }, pageSize: request.pageSize, pageToken: request.pageToken,
      measure: { ((try? Wire.template($0).serializedBytes()) as [UInt8]?)?.count ?? 0 })
    return .with {
      $0.templates = page.items.map(Wire.template); $0.nextPageToken = page.next
    }
  }

  /// `DeleteSandboxTemplate` RPC: records `template.deleted`; NOT_FOUND unless `allow_missing`. Callers:
  /// operators and users, not sandboxes.
  public func deleteSandboxTemplate(request: Openshell_V1_DeleteSandboxTemplateRequest, context: ServerContext) async throws
    -> Openshell_V1_DeleteSandboxTemplateResponse
  {
    let caller = try userCaller("DeleteSandboxTemplate")
    let result = try await store.execute(
      actor: caller.actor, requestID: request.requestID, rpc: "DeleteSandboxTemplate", target: Self.requestTarget(request.workspaceScope, request.name)
    ) { state in
      let ws = try workspace(request.workspaceScope, state)
      guard let t = state.template(named: request.name, workspace: ws) else {
        if request.allowMissing { return Decision(events: []) }
        throw RPCErrors.notFound("sandbox template \(ws)/\(request.name)")
      }
      let event = GatewayEvent(
        .sandboxTemplateDeleted(
          .with {
            $0.id = t.id; $0.name = t.name; $0.workspace = t.workspace
          }))
      return Decision(events: [event], claims: ["template/\(ws)/\(t.name)"], target: t.id)
    }
    return .with { $0.outcome = result.decision.target.isEmpty ? .alreadyAbsent : .completed }
  }
}
