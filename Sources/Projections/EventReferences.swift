/// Which sandbox and which providers an event concerns — the one place the audit filters
/// (`openshell audit --sandbox/--provider`, `openshell-replay audit`, the audit API) learn it from.
///
/// An event's aggregate is its consistency boundary, not its subject: a sandbox's certificate is in the
/// `certificate` aggregate and its SSH session in `ssh_session`, yet both belong to the sandbox's audit trail
/// (issue 12). The switches are exhaustive, so a new event kind has to say what it refers to.
extension GatewayEvent {
  /// The id of the sandbox this event is about, or nil when it concerns no sandbox (or, like
  /// `ssh.session_revoked`, names the sandbox only through another record: the session it ends).
  public var sandboxReference: String? {
    guard let kind else { return nil }
    let id: String
    switch kind {
    case .gatewayInitialized, .gatewayConfigured, .gatewayRestored, .workspaceCreated, .workspaceDeleted,
      .sandboxTemplateCreated, .sandboxTemplateDeleted, .providerCreated, .providerUpdated, .providerCredentialRotated,
      .providerDeleted, .globalPolicySet, .globalPolicyDeleted, .inferenceRouteSet, .inferenceRouteDeleted,
      .inferenceBundlePublished, .auditCheckpoint, .accessRefused, .sshSessionRevoked:
      return nil
    case .certificateIssued(let e): id = e.role == "sandbox" ? e.sandboxID : ""
    case .sandboxRequested(let e): id = e.id
    case .sandboxProvisioning(let e): id = e.id
    case .sandboxReady(let e): id = e.id
    case .sandboxFailed(let e): id = e.id
    case .sandboxStopping(let e): id = e.id
    case .sandboxStopped(let e): id = e.id
    case .sandboxStarting(let e): id = e.id
    case .sandboxDeleting(let e): id = e.id
    case .sandboxDeleted(let e): id = e.id
    case .sandboxMainProcessExited(let e): id = e.id
    case .sandboxConditionSet(let e): id = e.id
    case .sandboxNetworkDenials(let e): id = e.id
    case .sandboxProviderAttached(let e): id = e.sandboxID
    case .sandboxProviderDetached(let e): id = e.sandboxID
    case .policyRevisionSubmitted(let e): id = e.sandboxID
    case .policyRevisionLoaded(let e): id = e.sandboxID
    case .policyRevisionFailed(let e): id = e.sandboxID
    case .policyRevisionSuperseded(let e): id = e.sandboxID
    case .settingSet(let e): id = e.scope == "global" ? "" : e.scope
    case .settingDeleted(let e): id = e.scope == "global" ? "" : e.scope
    case .sshSessionCreated(let e): id = e.sandboxID
    case .sshTunnelOpened(let e): id = e.sandboxID
    case .sshTunnelClosed(let e): id = e.sandboxID
    case .serviceExposed(let e): id = e.sandboxID
    case .serviceDeleted(let e): id = e.sandboxID
    case .credentialsDisclosed(let e): id = e.sandboxID
    case .execStarted(let e): id = e.sandboxID
    case .execEnded(let e): id = e.sandboxID
    case .credentialsSubstituted(let e): id = e.sandboxID
    case .supervisorConnected(let e): id = e.sandboxID
    case .supervisorDisconnected(let e): id = e.sandboxID
    }
    return id.isEmpty ? nil : id
  }

  /// The providers this event names: their id for the provider's own events, their names where a sandbox
  /// or a credential disclosure refers to them. Empty when it names none.
  public var providerReferences: [String] {
    switch kind {
    case .providerCreated(let e): return [e.id]
    case .providerUpdated(let e): return [e.id]
    case .providerCredentialRotated(let e): return [e.id]
    case .providerDeleted(let e): return [e.id]
    case .sandboxRequested(let e): return e.providers
    case .sandboxProviderAttached(let e): return [e.provider]
    case .sandboxProviderDetached(let e): return [e.provider]
    case .credentialsDisclosed(let e): return e.providers
    case .credentialsSubstituted(let e):
      var names: [String] = []
      for s in e.substitutions where !s.provider.isEmpty && !names.contains(s.provider) { names.append(s.provider) }
      return names
    default: return []
    }
  }
}
