import EventLog
import Foundation
import GRPCCore
import Logging
import OpenShellAPI
import PolicyKit
import Projections
import SwiftProtobuf

/// What CreateSandbox answers with, taken from the state right after its records were applied.
struct CreatedSandbox: Sendable {
  var record: SandboxRecord
  var activePolicyVersion: UInt32
}

extension OpenShellService {
  /// `CreateSandbox` RPC: validates the spec, policy, template and providers, then records `sandbox.requested`
  /// (environment values sealed) and, when the spec has a policy, its revision 1; the driver provisions it
  /// after the append. Callers: operators and users, not sandboxes. A retried request id returns the first
  /// result.
  public func createSandbox(request: Openshell_V1_CreateSandboxRequest, context: ServerContext) async throws -> Openshell_V1_SandboxResponse {
    let caller = try userCaller("CreateSandbox")
    // A retried request returns what the first attempt created.
    if let prior = try await existingSandbox(forRequest: request.requestID, target: Self.requestTarget(request.workspaceScope, request.name)) {
      return prior
    }
    try ObjectLimits.checkSandbox(request)
    try Self.validateSpec(request.spec)
    let result = try await store.execute(
      actor: caller.actor, requestID: request.requestID, rpc: "CreateSandbox", target: Self.requestTarget(request.workspaceScope, request.name)
    ) { state in
      let ws = try workspace(request.workspaceScope, state)
      var name = request.name
      if name.isEmpty {
        name = NameGenerator.generate { state.sandbox(named: $0, workspace: ws) != nil }
      } else if let v = NameRule.violation(name) {
        throw RPCErrors.invalidArgument(field: "name", "sandbox name \(name.debugDescription) \(v)")
      }
      guard state.sandbox(named: name, workspace: ws) == nil else { throw RPCErrors.alreadyExists("sandbox \(ws)/\(name)") }
      for (k, v) in request.labels { if let m = LabelRule.violation(key: k, value: v) { throw RPCErrors.invalidArgument(field: "labels", m) } }
      for (k, v) in request.annotations { if let m = LabelRule.violation(key: k, value: v) { throw RPCErrors.invalidArgument(field: "annotations", m) } }
      var templateVersion: UInt64 = 0
      var template: TemplateRecord?
      if !request.workloadTemplate.isEmpty {
        guard let t = state.template(named: request.workloadTemplate, workspace: ws) else {
          throw RPCErrors.failedPrecondition("sandbox template \(ws)/\(request.workloadTemplate) does not exist")
        }
        templateVersion = t.resourceVersion
        template = t
        // What the template asks of the compute driver is checked like the sandbox's own spec.
        if let driver, let why = driver.unsupported(spec: Wire.deterministicBytes(Self.effectiveSpec(template: t))) {
          throw RPCErrors.failedPrecondition("sandbox template \(ws)/\(t.name): \(why)")
        }
      }
      for provider in request.spec.providers {
        guard let p = state.provider(named: provider, workspace: ws) else {
          throw RPCErrors.failedPrecondition("provider \(provider) does not exist in workspace \(ws)")
        }
        // Credentials that can no longer be opened would silently be missing in the sandbox.
        if let vault, !p.credentials.isEmpty, !vault.hasDataKey(p.dataKeyID) {
          throw RPCErrors.failedPrecondition(
            "the credentials of provider \(provider) cannot be decrypted (its data key \(p.dataKeyID) is missing, e.g. after a restore without the archive's keys/); \(RPCErrors.recreateHint(provider))"
          )
        }
      }
      var serviceNames = Set<String>()
      for (i, e) in request.serviceExposures.enumerated() {
        try Self.validateExposure(service: e.service, port: e.targetPort, mode: e.authorizationMode, field: "service_exposures[\(i)]")
        guard serviceNames.insert(e.service).inserted else {
          throw RPCErrors.invalidArgument(field: "service_exposures[\(i)].service", "\(e.service.isEmpty ? "the unnamed service" : e.service) is given twice")
        }
      }
      // The gateway's policy safety rules (OpenShell): the same check as UpdateConfig.
      if request.spec.hasPolicy {
        let issues = PolicyRules.safetyIssues(request.spec.policy)
        if !issues.isEmpty {
          throw RPCErrors.invalidArgument(
            message: PolicyRules.unsafeMessage(issues),
            violations: issues.map { (field: "spec.policy.\($0.path)", description: $0.message) })
        }
      }
      // The template's workload is folded into the recorded spec, so that the sandbox gets it (and a later
      // change of the template does not change a sandbox created from an earlier version).
      let effective = template.map { Self.merged(request.spec, template: $0) } ?? request.spec
      if let driver, let why = driver.unsupported(spec: Wire.deterministicBytes(effective)) { throw RPCErrors.failedPrecondition(why) }
      let id = RandomID.uuid()
      // Environment values are sealed under the sandbox's own data key, never recorded in plain text. A key
      // made here for an event that is then not appended is an orphan the start-up janitor destroys.
      let sealed = try Self.sealEnvironment(effective, sandboxID: id, vault: vault)
      let spec = Wire.deterministicBytes(sealed.spec)
      let requested = GatewayEvent(
        .sandboxRequested(
          .with {
            $0.id = id
            $0.name = name
            $0.workspace = ws
            $0.labels = request.labels
            $0.annotations = request.annotations
            $0.spec = spec
            $0.templateName = request.workloadTemplate
            $0.templateVersion = templateVersion
            $0.providers = request.spec.providers
            $0.envKeyID = sealed.keyID
            $0.sealedEnvironment = sealed.environment
            $0.sealedTemplateEnvironment = sealed.templateEnvironment
            $0.createdBy = caller.actor
            $0.serviceExposures = request.serviceExposures.map { e in
              .with {
                $0.service = e.service; $0.targetPort = e.targetPort; $0.authorizationMode = e.authorizationMode == .bearerPassthrough ? 2 : 1
              }
            }
          }))
      // Revision 1 (the creation policy) is recorded with the sandbox, pending until its supervisor loads it.
      let initial = request.spec.hasPolicy ? [ConfigModel.initialRevision(sandboxID: id, request.spec.policy)] : []
      return Decision(
        events: [requested] + initial, claims: ["sandbox/\(ws)/\(name)"], sharedClaims: ["workspace/\(ws)"], expecting: [.sandbox(id): .noStream])
    } respond: { state, seqs, decision in
      // The created sandbox, taken from the state on the actor (no state copy leaves it; issue 14).
      guard seqs != nil else { return CreatedSandbox?.none }
      guard case .sandboxRequested(let e)? = decision.events.first?.kind, let sandbox = state.sandboxes[e.id] else {
        throw RPCError(code: .internalError, message: "sandbox was recorded but is not in the projection")
      }
      return CreatedSandbox(record: sandbox, activePolicyVersion: state.policies[e.id]?.activeVersion ?? 0)
    }
    guard let created = result else {
      // A retry that raced its first attempt (it waited for that append) returns what the attempt created.
      if let prior = try await existingSandbox(forRequest: request.requestID, target: Self.requestTarget(request.workspaceScope, request.name)) {
        return prior
      }
      throw RPCError(code: .internalError, message: "sandbox was recorded but is not in the projection")
    }
    return .with {
      $0.sandbox = Wire.sandbox(created.record, activePolicyVersion: created.activePolicyVersion)
      $0.serviceUrls = serviceURLs(created.record)
    }
  }

  /// The object a request names, for idempotency (``GatewayStore/execute(actor:requestID:rpc:target:_:)``):
  /// `<workspace as requested>/<name as requested>` (either may be empty: the default workspace, a generated name).
  static func requestTarget(_ scope: Openshell_Datamodel_V1_WorkspaceSelector, _ name: String) -> String {
    "\(scope.workspace)/\(name)"
  }

  /// `spec` with its environment values sealed for sandbox `sandboxID` (``SandboxEnvironmentSecrets``).
  /// - Throws: FAILED_PRECONDITION when values are given and the gateway has no vault; RESOURCE_EXHAUSTED
  ///   when the disk is full; INTERNAL (details in the gateway log, never the values) otherwise.
  static func sealEnvironment(_ spec: Openshell_V1_SandboxSpec, sandboxID: String, vault: SecretVault?) throws -> SandboxEnvironmentSecrets.Sealed {
    guard let vault else {
      if spec.environment.values.contains(where: { !$0.isEmpty }) || spec.template.environment.values.contains(where: { !$0.isEmpty }) {
        throw RPCErrors.failedPrecondition("this gateway has no secret vault, so it cannot store environment values; nothing was recorded")
      }
      return .init(spec: spec, keyID: "", environment: [:], templateEnvironment: [:])
    }
    do {
      return try SandboxEnvironmentSecrets.seal(spec, sandboxID: sandboxID, vault: vault)
    } catch let e as SecretVault.VaultError where e.errno == ENOSPC || e.errno == EDQUOT {
      throw RPCError(
        code: .resourceExhausted,
        message: "the gateway's disk is full: cannot store the sandbox's environment key; nothing was recorded; free space on the gateway host and retry")
    } catch {
      Logger(label: "openshell.gateway.sandboxes").error("CreateSandbox: cannot seal the environment: \(error)")
      throw RPCError(code: .internalError, message: "cannot seal the sandbox's environment values (see the gateway log); nothing was recorded")
    }
  }

  /// Checks of the request's spec that need no state and no compute driver: environment variable names,
  /// well-formed resource quantities (what the driver can enforce is its own check, FAILED_PRECONDITION).
  static func validateSpec(_ spec: Openshell_V1_SandboxSpec) throws {
    try EnvironmentRule.check(spec.environment, field: "spec.environment")
    try EnvironmentRule.check(spec.template.environment, field: "spec.template.environment")
    if spec.template.hasResources, let v = ResourcesRule.violation(spec.template.resources) {
      throw RPCErrors.invalidArgument(field: "spec.template.resources", v)
    }
  }

  /// A sandbox spec carrying a workload template's image, GPU and resource requests, for the driver check.
  static func effectiveSpec(template t: TemplateRecord) -> Openshell_V1_SandboxSpec {
    var spec = Openshell_V1_SandboxSpec()
    guard let ts = try? Openshell_V1_SandboxWorkloadTemplateSpec(serializedBytes: t.spec) else { return spec }
    let w = ts.workload
    if !w.image.isEmpty { spec.template.image = w.image }
    if !w.resources.cpu.isEmpty { spec.template.resources.fields["cpu"] = .init(stringValue: w.resources.cpu) }
    if !w.resources.memory.isEmpty { spec.template.resources.fields["memory"] = .init(stringValue: w.resources.memory) }
    if w.resources.hasGpu { spec.resourceRequirements.gpu = w.resources.gpu }
    if ts.hasDriverConfig { spec.template.driverConfig = ts.driverConfig }
    return spec
  }

  /// `spec` with what workload template `t` provides and the request does not: its environment (the
  /// request's variables win), image, cpu/memory/GPU requests and driver config.
  static func merged(_ spec: Openshell_V1_SandboxSpec, template t: TemplateRecord) -> Openshell_V1_SandboxSpec {
    guard let ts = try? Openshell_V1_SandboxWorkloadTemplateSpec(serializedBytes: t.spec) else { return spec }
    var out = spec
    let w = ts.workload
    out.template.environment = w.environment.merging(spec.template.environment) { _, request in request }
    if out.template.image.isEmpty { out.template.image = w.image }
    let fromTemplate = effectiveSpec(template: t)
    if !(out.template.hasResources && !out.template.resources.fields.isEmpty), fromTemplate.template.hasResources {
      out.template.resources = fromTemplate.template.resources
    }
    if !out.hasResourceRequirements, fromTemplate.hasResourceRequirements { out.resourceRequirements = fromTemplate.resourceRequirements }
    if !(out.template.hasDriverConfig && !out.template.driverConfig.fields.isEmpty), ts.hasDriverConfig {
      out.template.driverConfig = ts.driverConfig
    }
    return out
  }

  /// The sandbox created by an earlier request with this request id, if any.
  /// - Throws: INVALID_ARGUMENT when the request id was used by another request
  ///   (``GatewayStore/checkRetry(_:requestID:rpc:target:)``); NOT_FOUND when the sandbox that request
  ///   created has been deleted since.
  func existingSandbox(forRequest requestID: String, target: String) async throws -> Openshell_V1_SandboxResponse? {
    guard !requestID.isEmpty else { return nil }
    let state = await store.state
    guard let seq = state.requests[requestID], let record = try? store.log.record(at: seq) else { return nil }
    try GatewayStore.checkRetry(record, requestID: requestID, rpc: "CreateSandbox", target: target)
    guard record.aggregate.kind == "sandbox" else { return nil }
    guard let s = state.sandboxes[record.aggregate.id] else {
      throw RPCError(
        code: .notFound, message: "the sandbox created by request \(requestID.debugDescription) (id \(record.aggregate.id)) has been deleted since")
    }
    return .with {
      $0.sandbox = Wire.sandbox(s, state: state)
      $0.serviceUrls = serviceURLs(s)
    }
  }

  /// Answered from the projection under its lock, without entering the store's actor (issue 14); sees every
  /// command that has returned.
  public func getSandbox(request: Openshell_V1_GetSandboxRequest, context: ServerContext) async throws -> Openshell_V1_SandboxResponse {
    _ = try userCaller("GetSandbox")
    return try store.read { state in
      let ws = try workspace(request.workspaceScope, state)
      guard let s = state.sandbox(named: request.name, workspace: ws) else { throw RPCErrors.notFound("sandbox \(ws)/\(request.name)") }
      return .with { $0.sandbox = Wire.sandbox(s, state: state) }
    }
  }

  /// `ListSandboxes` RPC: sandboxes of a workspace (or all) matching the label selector, by (workspace, name),
  /// paginated. Callers: operators and users, not sandboxes.
  public func listSandboxes(request: Openshell_V1_ListSandboxesRequest, context: ServerContext) async throws -> Openshell_V1_ListSandboxesResponse {
    _ = try userCaller("ListSandboxes")
    let state = await store.state
    let scope = try listScope(request.workspaceScope, state)
    let sel = try selector(request.labelSelector)
    let items = state.sandboxList(workspace: scope).filter { sel.matches($0.labels) }
    let page = try Pagination.page(
      items, key: { "\($0.workspace)/\($0.name)/\($0.id)" }, pageSize: request.pageSize, pageToken: request.pageToken,
      measure: { ((try? Wire.sandbox($0, state: state).serializedBytes()) as [UInt8]?)?.count ?? 0 })
    return .with {
      $0.sandboxes = page.items.map { Wire.sandbox($0, state: state) }
      $0.nextPageToken = page.next
    }
  }

  /// `DeleteSandbox` RPC: records `sandbox.deleting` (and `sandbox.deleted` at once when no driver runs it);
  /// NOT_FOUND unless `allow_missing`. Callers: operators and users, not sandboxes.
  public func deleteSandbox(request: Openshell_V1_DeleteSandboxRequest, context: ServerContext) async throws -> Openshell_V1_DeleteSandboxResponse {
    let caller = try userCaller("DeleteSandbox")
    let result = try await store.execute(
      actor: caller.actor, requestID: request.requestID, rpc: "DeleteSandbox", target: Self.requestTarget(request.workspaceScope, request.name)
    ) { state in
      let ws = try workspace(request.workspaceScope, state)
      guard let s = state.sandbox(named: request.name, workspace: ws) else {
        if request.allowMissing { return Decision(events: []) }
        throw RPCErrors.notFound("sandbox \(ws)/\(request.name)")
      }
      if s.phase == .deleting { return Decision(events: [], target: s.id, noop: true) }
      // The events carry the id resolved here, so a newer sandbox that later reuses the name is never touched.
      var events = [GatewayEvent(.sandboxDeleting(.with { $0.id = s.id }))]
      if driver == nil { events.append(GatewayEvent(.sandboxDeleted(.with { $0.id = s.id }))) }
      return Decision(events: events, claims: ["sandbox-id/\(s.id)"], target: s.id)
    }
    let targetID = result.decision.target
    return .with {
      $0.sandboxID = targetID
      if targetID.isEmpty {
        $0.outcome = .alreadyAbsent
      } else if result.state.sandboxes[targetID] != nil {
        $0.outcome = .accepted
      } else {
        $0.outcome = .completed
      }
    }
  }

  /// `StopSandbox` RPC: records `sandbox.stopping` (`sandbox.stopped` at once without a driver); a no-op when
  /// already stopped or stopping. Callers: operators and users, not sandboxes. FAILED_PRECONDITION while
  /// deleting.
  public func stopSandbox(request: Openshell_V1_StopSandboxRequest, context: ServerContext) async throws -> Openshell_V1_SandboxResponse {
    let caller = try userCaller("StopSandbox")
    let result = try await store.execute(
      actor: caller.actor, requestID: request.requestID, rpc: "StopSandbox", target: Self.requestTarget(request.workspaceScope, request.name)
    ) { state in
      let ws = try workspace(request.workspaceScope, state)
      guard let s = state.sandbox(named: request.name, workspace: ws) else { throw RPCErrors.notFound("sandbox \(ws)/\(request.name)") }
      switch s.phase {
      case .stopped, .stopping: return Decision(events: [], target: s.id, noop: true)
      case .deleting: throw RPCErrors.failedPrecondition("sandbox \(ws)/\(s.name) is being deleted")
      default: break
      }
      var events = [
        GatewayEvent(
          .sandboxStopping(
            .with {
              $0.id = s.id; $0.reason = "requested by \(caller.actor)"
            }))
      ]
      if driver == nil { events.append(GatewayEvent(.sandboxStopped(.with { $0.id = s.id }))) }
      return Decision(events: events, claims: ["sandbox-id/\(s.id)"], target: s.id)
    }
    guard let s = result.state.sandboxes[result.decision.target] else { throw RPCErrors.notFound("sandbox \(request.name)") }
    return .with { $0.sandbox = Wire.sandbox(s, state: result.state) }
  }

  /// `StartSandbox` RPC: records `sandbox.starting` for a stopped, completed or failed sandbox (the driver then
  /// starts it; without a driver also `sandbox.provisioning`); a no-op while it runs. FAILED_PRECONDITION while
  /// stopping or deleting. Callers: operators and users, not sandboxes.
  public func startSandbox(request: Openshell_V1_StartSandboxRequest, context: ServerContext) async throws -> Openshell_V1_SandboxResponse {
    let caller = try userCaller("StartSandbox")
    let result = try await store.execute(
      actor: caller.actor, requestID: request.requestID, rpc: "StartSandbox", target: Self.requestTarget(request.workspaceScope, request.name)
    ) { state in
      let ws = try workspace(request.workspaceScope, state)
      guard let s = state.sandbox(named: request.name, workspace: ws) else { throw RPCErrors.notFound("sandbox \(ws)/\(request.name)") }
      switch s.phase {
      case .stopped, .error, .completed: break
      case .ready, .starting, .provisioning: return Decision(events: [], target: s.id, noop: true)
      default: throw RPCErrors.failedPrecondition("sandbox \(ws)/\(s.name) is \(s.phase.name.lowercased()); only a stopped sandbox can be started")
      }
      var events = [GatewayEvent(.sandboxStarting(.with { $0.id = s.id }))]
      if driver == nil {
        events.append(
          GatewayEvent(
            .sandboxProvisioning(
              .with {
                $0.id = s.id; $0.message = "no compute driver configured"
              })))
      }
      return Decision(events: events, claims: ["sandbox-id/\(s.id)"], target: s.id)
    }
    guard let s = result.state.sandboxes[result.decision.target] else { throw RPCErrors.notFound("sandbox \(request.name)") }
    return .with { $0.sandbox = Wire.sandbox(s, state: result.state) }
  }
}
