import EventLog
import Foundation

extension GatewayState {
  /// Applies one stored record: decodes its payload and folds it into the state.
  ///
  /// Pure and deterministic: no clock, no randomness, no I/O; every timestamp and id comes from
  /// the record. Records must be applied in seq order; a record at or below `lastSeq` is ignored
  /// (so a snapshot plus an overlapping tail is safe).
  /// - Throws: `ProjectionError` when the payload cannot be decoded.
  public mutating func apply(_ record: EventRecord) throws {
    guard record.seq > lastSeq else { return }
    // The kind alone, not a whole `GatewayEvent` (no copy of the event's fields in and out of the envelope).
    apply(kind: try GatewayEvent.decodeKind(record), seq: record.seq, timestampNs: record.timestampNs)
    if !record.requestID.isEmpty {
      // One hash lookup (the dictionary's modify accessor) instead of a read and a write.
      let added = Self.insertIfAbsent(&requests[record.requestID], record.seq)
      if added && requests.count == Self.requestReserveAt {
        // A log this long fills the window: room for all of it at once instead of doubling (and rehashing
        // every id) five more times on the way (issue 14: ~3 % of a replay).
        requests.reserveCapacity(Self.requestWindow + Self.requestWindow / 10 + 1)
      }
      if added && requests.count > Self.requestWindow + Self.requestWindow / 10 { pruneRequests() }
    }
    lastSeq = record.seq
  }

  /// Request ids at which ``requests`` gets the capacity of the whole window.
  static let requestReserveAt = 4096

  /// Keeps the newest ``requestWindow`` request ids (by the seq they first produced). Runs when the map
  /// has grown 10 % past the window, so its cost (a sort) is spread over 10,000 requests; deterministic
  /// (a function of the records alone), so every replica and replay keeps the same ids.
  mutating func pruneRequests() {
    // The cutoff is the (count − window)-th smallest seq (seqs are distinct: a record has one request id),
    // found by selection in O(n) instead of sorting all ~110,000 values (issue 14: the sort was 18 % of
    // apply in a 1M-event replay).
    var seqs = Array(requests.values)
    let cutoff = Self.select(&seqs, seqs.count - Self.requestWindow)
    // Removed in place: the map keeps its capacity instead of regrowing after every prune.
    let old = requests.compactMap { $0.value < cutoff ? $0.key : nil }
    for k in old { requests.removeValue(forKey: k) }
  }

  /// The `k`-th smallest element of `a` (0-based; `a` is reordered): Hoare quickselect with a
  /// median-of-three pivot. Same result as `a.sorted()[k]`.
  static func select(_ a: inout [UInt64], _ k: Int) -> UInt64 {
    precondition(k >= 0 && k < a.count)
    return a.withUnsafeMutableBufferPointer { b in
      var lo = 0
      var hi = b.count - 1
      while lo < hi {
        let x = b[lo]
        let y = b[lo + (hi - lo) / 2]
        let z = b[hi]
        let pivot = max(min(x, y), min(max(x, y), z))
        var i = lo
        var j = hi
        while i <= j {
          while b[i] < pivot { i += 1 }
          while b[j] > pivot { j -= 1 }
          if i <= j {
            b.swapAt(i, j)
            i += 1
            j -= 1
          }
        }
        if k <= j {
          hi = j
        } else if k >= i {
          lo = i
        } else {
          return b[k]
        }
      }
      return b[k]
    }
  }

  private static func insertIfAbsent(_ slot: inout UInt64?, _ seq: UInt64) -> Bool {
    guard slot == nil else { return false }
    slot = seq
    return true
  }

  /// Folds one decoded event into the state (`seq` and `timestampNs` from its record).
  public mutating func apply(_ event: GatewayEvent, seq: UInt64, timestampNs: UInt64) {
    guard let kind = event.kind else { return }
    apply(kind: kind, seq: seq, timestampNs: timestampNs)
  }

  /// Folds one event kind into the state (``apply(_:seq:timestampNs:)`` without the envelope).
  mutating func apply(kind: GatewayEvent.OneOf_Kind, seq: UInt64, timestampNs: UInt64) {
    switch kind {
    case .providerCreated, .providerUpdated, .providerCredentialRotated, .providerDeleted, .sandboxProviderAttached, .sandboxProviderDetached:
      providerChangeSeq = seq  // the kinds of ``providerChangeTypes``
    default: break
    }
    switch kind {
    case .gatewayInitialized(let e):
      gateway = GatewayRecord(name: e.gatewayName, id: e.gatewayID, serverVersion: e.serverVersion, initializedNs: timestampNs)
    case .gatewayConfigured(let e):
      var g = gateway ?? GatewayRecord(name: "", id: "", serverVersion: "", initializedNs: timestampNs)
      g.port = e.port
      g.authMode = e.authMode
      g.gpu = e.gpu
      g.registryUsername = e.registryUsername
      g.gatewayHosts = e.gatewayHosts
      gateway = g
    case .gatewayRestored(let e):
      if !e.gatewayName.isEmpty { gateway?.name = e.gatewayName }
    case .certificateIssued(let e):
      certificates[e.fingerprintSha256] = CertificateRecord(
        role: e.role, subject: e.subject, fingerprint: e.fingerprintSha256, serialHex: e.serialHex,
        notBeforeNs: e.notBeforeNs, notAfterNs: e.notAfterNs, subjectAltNames: e.subjectAltNames,
        sandboxID: e.sandboxID, issuedNs: timestampNs)
      activeCertificates[e.role == "sandbox" ? "sandbox:\(e.sandboxID)" : e.role] = e.fingerprintSha256

    case .workspaceCreated(let e):
      workspaces[e.name] = WorkspaceRecord(id: e.id, name: e.name, labels: e.labels, createdNs: timestampNs, resourceVersion: seq)
    case .workspaceDeleted(let e):
      workspaces[e.name] = nil

    case .sandboxTemplateCreated(let e):
      nameIndex["template/\(e.workspace)/\(e.name)"] = e.id
      templates[e.id] = TemplateRecord(
        id: e.id, name: e.name, workspace: e.workspace, labels: e.labels, annotations: e.annotations,
        spec: e.spec, createdNs: timestampNs, resourceVersion: seq)
    case .sandboxTemplateDeleted(let e):
      if let t = templates[e.id] { nameIndex["template/\(t.workspace)/\(t.name)"] = nil }
      templates[e.id] = nil

    case .sandboxRequested(let e):
      nameIndex["sandbox/\(e.workspace)/\(e.name)"] = e.id
      sandboxes[e.id] = SandboxRecord(
        id: e.id, name: e.name, workspace: e.workspace, labels: e.labels, annotations: e.annotations,
        spec: e.spec, templateName: e.templateName, templateVersion: e.templateVersion,
        serviceExposures: e.serviceExposures.map {
          ServiceExposureRecord(service: $0.service, targetPort: $0.targetPort, authorizationMode: $0.authorizationMode)
        },
        providers: Array(Set(e.providers)).sorted(), phase: .provisioning, conditions: [],
        createdNs: timestampNs, resourceVersion: seq, deletionRequestedNs: nil, exitCode: nil,
        mainProcessStartedNs: nil, restartCount: 0, hostKeyFingerprint: "", driver: "", createdBy: e.createdBy,
        sealedEnvironment: e.envKeyID.isEmpty
          ? nil
          : SealedEnvironmentRecord(
            keyID: e.envKeyID, environment: e.sealedEnvironment, templateEnvironment: e.sealedTemplateEnvironment))
    case .sandboxProvisioning(let e):
      updateSandbox(e.id, seq) { s in
        s.phase = .provisioning
        s.driver = e.driver
        s.setCondition("Ready", "False", "Provisioning", e.message, timestampNs)
      }
    case .sandboxReady(let e):
      updateSandbox(e.id, seq) { s in
        s.phase = .ready
        s.hostKeyFingerprint = e.hostKeyFingerprint
        s.exitCode = nil
        if e.mainProcessStartedNs != 0 { s.mainProcessStartedNs = e.mainProcessStartedNs }
        s.setCondition("Ready", "True", "SupervisorReady", "", timestampNs)
      }
    case .sandboxFailed(let e):
      updateSandbox(e.id, seq) { s in
        s.phase = .error
        s.setCondition("Ready", "False", e.reason, e.message, timestampNs)
      }
    case .sandboxStopping(let e):
      updateSandbox(e.id, seq) { s in s.phase = .stopping }
    case .sandboxStopped(let e):
      updateSandbox(e.id, seq) { s in
        s.phase = .stopped
        s.setCondition("Ready", "False", "Stopped", "", timestampNs)
      }
    case .sandboxStarting(let e):
      updateSandbox(e.id, seq) { s in
        s.phase = .starting
        s.restartCount += 1
        s.recentStartsNs = Array(((s.recentStartsNs ?? []) + [timestampNs]).suffix(SandboxRecord.recentStartsKept))
      }
    case .sandboxDeleting(let e):
      updateSandbox(e.id, seq) { s in
        s.phase = .deleting
        s.deletionRequestedNs = timestampNs
      }
    case .sandboxDeleted(let e):
      if let s = sandboxes[e.id], nameIndex["sandbox/\(s.workspace)/\(s.name)"] == e.id { nameIndex["sandbox/\(s.workspace)/\(s.name)"] = nil }
      sandboxes[e.id] = nil
      policies[e.id] = nil
      settings[e.id] = nil
    case .sandboxMainProcessExited(let e):
      // OpenShell's phases: the main process ending ends the sandbox (COMPLETED for exit 0, ERROR
      // otherwise); the driver then stops what still runs and applies `restart_policy`.
      updateSandbox(e.id, seq) { s in
        s.exitCode = e.exitCode
        guard [.provisioning, .starting, .ready].contains(s.phase) else { return }
        if e.exitCode == 0, e.signal == 0 {
          s.phase = .completed
          s.setCondition("Ready", "False", SandboxRecord.mainProcessCompleted, "the main process exited with code 0", timestampNs)
        } else {
          s.phase = .error
          let how = e.signal != 0 ? "was killed by signal \(e.signal) (code \(e.exitCode))" : "exited with code \(e.exitCode)"
          s.setCondition("Ready", "False", SandboxRecord.mainProcessFailed, "the main process \(how)", timestampNs)
        }
      }
    case .sandboxNetworkDenials:
      break  // audit only: no state (the log keeps them; `openshell-replay audit` shows them)
    case .sandboxConditionSet(let e):
      updateSandbox(e.id, seq) { s in s.setCondition(e.type, e.status, e.reason, e.message, timestampNs) }
    case .sandboxProviderAttached(let e):
      updateSandbox(e.sandboxID, seq) { s in
        if !s.providers.contains(e.provider) { s.providers = (s.providers + [e.provider]).sorted() }
      }
    case .sandboxProviderDetached(let e):
      updateSandbox(e.sandboxID, seq) { s in s.providers.removeAll { $0 == e.provider } }

    case .providerCreated(let e):
      var creds: [String: Data] = [:]
      for c in e.credentials { creds[c.key] = c.sealed }
      nameIndex["provider/\(e.workspace)/\(e.name)"] = e.id
      providers[e.id] = ProviderRecord(
        id: e.id, name: e.name, workspace: e.workspace, type: e.type, config: e.config,
        credentials: creds, dataKeyID: e.dataKeyID, createdNs: timestampNs, updatedNs: timestampNs,
        resourceVersion: seq, rotations: [:])
    case .providerUpdated(let e):
      Self.modify(&providers[e.id]) { p in
        for (k, v) in e.setConfig { p.config[k] = v }
        for k in e.removedConfig { p.config[k] = nil }
        for c in e.setCredentials { p.credentials[c.key] = c.sealed }
        for k in e.removedCredentials { p.credentials[k] = nil; p.rotations[k] = nil }
        p.updatedNs = timestampNs
        p.resourceVersion = seq
      }
    case .providerCredentialRotated(let e):
      Self.modify(&providers[e.id]) { p in
        p.credentials[e.credential.key] = e.credential.sealed
        p.rotations[e.credential.key] = seq
        p.updatedNs = timestampNs
        p.resourceVersion = seq
      }
    case .providerDeleted(let e):
      if let p = providers[e.id] { nameIndex["provider/\(p.workspace)/\(p.name)"] = nil }
      providers[e.id] = nil

    case .policyRevisionSubmitted(let e):
      let revision = PolicyRevisionRecord(
        version: e.version, contentSHA256: e.contentSha256, policy: e.policy, status: .pending,
        message: "", submittedNs: timestampNs, loadedNs: nil)
      if e.sandboxID.isEmpty {
        globalPolicy.revisions.append(revision)
      } else {
        policies[e.sandboxID, default: PolicyHistory()].revisions.append(revision)
      }
    case .policyRevisionLoaded(let e):
      updatePolicy(e.sandboxID) { h in
        guard let i = h.revisions.firstIndex(where: { $0.version == e.version }) else { return }
        h.revisions[i].status = .loaded
        h.revisions[i].message = ""
        h.revisions[i].loadedNs = timestampNs
        if e.version > h.activeVersion { h.activeVersion = e.version }
      }
    case .policyRevisionFailed(let e):
      updatePolicy(e.sandboxID) { h in
        guard let i = h.revisions.firstIndex(where: { $0.version == e.version }) else { return }
        h.revisions[i].status = .failed
        h.revisions[i].message = e.message
      }
    case .policyRevisionSuperseded(let e):
      updatePolicy(e.sandboxID) { h in
        guard let i = h.revisions.firstIndex(where: { $0.version == e.version }) else { return }
        h.revisions[i].status = .superseded
      }
    case .globalPolicySet(let e):
      globalPolicy.revisions.append(
        PolicyRevisionRecord(
          version: e.version, contentSHA256: e.contentSha256, policy: e.policy, status: .loaded,
          message: "", submittedNs: timestampNs, loadedNs: timestampNs))
      globalPolicy.activeVersion = e.version
      globalPolicyActive = true
    case .globalPolicyDeleted:
      globalPolicyActive = false
      globalPolicy.activeVersion = 0

    case .settingSet(let e):
      settings[e.scope, default: [:]][e.key] = e.value
    case .settingDeleted(let e):
      settings[e.scope]?[e.key] = nil
      if settings[e.scope]?.isEmpty == true { settings[e.scope] = nil }

    case .inferenceRouteSet(let e):
      inferenceRoutes[e.route] = InferenceRouteRecord(
        route: e.route, provider: e.provider, model: e.model, timeoutSeconds: e.timeoutSeconds,
        verified: e.verified, updatedNs: timestampNs, version: (inferenceRoutes[e.route]?.version ?? 0) + 1)
    case .inferenceRouteDeleted(let e):
      inferenceRoutes[e.route] = nil
    case .inferenceBundlePublished(let e):
      inferenceBundleRevision = e.revision

    case .sshSessionCreated(let e):
      sshSessions[e.id] = SshSessionRecord(id: e.id, sandboxID: e.sandboxID, tokenSHA256: e.tokenSha256, expiresNs: e.expiresNs, revoked: false)
    case .sshSessionRevoked(let e):
      sshSessions[e.id]?.revoked = true

    case .auditCheckpoint, .accessRefused, .credentialsDisclosed, .execStarted, .execEnded, .credentialsSubstituted:
      break  // audit records only (issue 12): read by `openshell-replay audit` and the audit API, no state
    case .serviceExposed(let e):
      updateSandbox(e.sandboxID, seq) { s in
        s.serviceExposures.removeAll { $0.service == e.service }
        s.serviceExposures.append(ServiceExposureRecord(service: e.service, targetPort: e.targetPort, authorizationMode: e.authorizationMode))
        s.serviceExposures.sort { $0.service < $1.service }
      }
    case .serviceDeleted(let e):
      updateSandbox(e.sandboxID, seq) { s in s.serviceExposures.removeAll { $0.service == e.service } }
    case .sshTunnelOpened, .sshTunnelClosed:
      break  // audit only
    case .supervisorConnected, .supervisorDisconnected:
      break  // audit only (issue 12): live sessions are the SupervisorHub's, never the projection's
    }
  }

  // In-place updates: the dictionary's `_modify` accessor yields the stored value, so a record and its
  // arrays/dictionaries are mutated where they are, not copied out and back (which copied every array the
  // closure touched, issue 14).
  private mutating func updateSandbox(_ id: String, _ seq: UInt64, _ body: (inout SandboxRecord) -> Void) {
    Self.modify(&sandboxes[id]) { s in
      body(&s)
      s.resourceVersion = seq
    }
  }

  private mutating func updatePolicy(_ sandboxID: String, _ body: (inout PolicyHistory) -> Void) {
    if sandboxID.isEmpty {
      body(&globalPolicy)
    } else {
      Self.modify(&policies[sandboxID], body)
    }
  }

  /// Runs `body` on the value in `slot` in place; does nothing (and inserts nothing) when it is nil.
  static func modify<T>(_ slot: inout T?, _ body: (inout T) -> Void) {
    guard slot != nil else { return }
    body(&slot!)
  }
}

extension SandboxRecord {
  /// Sets (or replaces) the condition of this type; keeps conditions sorted by type.
  mutating func setCondition(_ type: String, _ status: String, _ reason: String, _ message: String, _ ns: UInt64) {
    let c = ConditionRecord(type: type, status: status, reason: reason, message: message, transitionNs: ns)
    if let i = conditions.firstIndex(where: { $0.type == type }) {
      conditions[i] = c
    } else {
      conditions.append(c)
      conditions.sort { $0.type < $1.type }
    }
  }
}
