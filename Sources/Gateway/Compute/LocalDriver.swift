import EventLog
import Foundation
import GRPCCore
import Logging
import OpenShellAPI
import Projections
import SandboxConfinement
import SandboxProtocol
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The `local` compute driver: each sandbox is the supervisor `openshell-sandbox` started by the
/// gateway inside bubblewrap namespaces on this host (isolation: ``BubblewrapCommand``).
///
/// It is a level-triggered reactor: every sandbox event (and every supervisor connect/exit) makes it
/// compare the projected phase of that sandbox with what runs, serially per sandbox:
///
/// | phase | action |
/// |---|---|
/// | PROVISIONING / STARTING | ensure a supervisor runs (record `sandbox.provisioning`, issue a sandbox certificate, start bwrap); READY is recorded when it connects |
/// | READY | ensure a supervisor runs (restarts one that is gone, e.g. after a host reboot) |
/// | STOPPING | stop it (SIGTERM to the supervisor, SIGKILL to the namespace after 3 s), record `sandbox.stopped` |
/// | STOPPED / ERROR / COMPLETED | ensure nothing runs; after a main-process exit, apply `restart_policy` (``MainProcessRestart``) |
/// | DELETING | stop it, remove its directory and logs, record `sandbox.deleted` |
/// | (absent) | orphan: stop whatever runs, remove the directory |
///
/// Idempotence: the running start of a sandbox is recorded in `<sandbox dir>/instance.json` (bwrap pid,
/// its start time, the instance id) before anything else happens, and "ensure running" adopts a live
/// instance instead of starting another, so replaying events after a crash never starts a sandbox twice.
/// The reactor's checkpoint (`local-driver`) is the last seq it handled.
///
/// Gateway restart: supervisors keep running (they are not tied to the gateway process) and reconnect
/// with backoff capped at 1 s, so READY sandboxes are READY and usable again about a second after the
/// gateway is back. At start-up the driver adopts live instances, restarts READY sandboxes whose
/// supervisor is gone (or was given another endpoint), and kills processes of sandboxes that were
/// deleted meanwhile (orphans).
///
/// Network: every sandbox gets its own network namespace whose only way out is its policy proxy (run by
/// the supervisor on the host side of a veth pair); rationale, addresses and lifecycle in
/// ``SandboxNetworks``. It is created before bwrap starts and removed when the sandbox stops, is deleted
/// or is found orphaned (also at gateway start, for every sandbox directory of this gateway; namespaces of
/// sandboxes unknown to this gateway may belong to another gateway on the host and are left alone). Without
/// root the supervisor makes a private namespace itself (``BubblewrapCommand/Network/private``). A gateway
/// that cannot confine (root without `ip`/`nft`, or no root on a host that refuses unprivileged user or
/// network namespaces) fails the sandbox with reason `NetworkConfinementUnavailable` instead of starting
/// it with an open network.
///
/// Layout per sandbox: `<data>/sandboxes/<id>/{workspace/, run/ (credentials, launch.json), instance.json,
/// bwrap-info.json, supervisor.log, network.json, nftables.conf}`.
public final class LocalComputeDriver: ComputeDriver, Sendable {
  public let name = "local"
  public static let checkpointName = "local-driver"
  /// How long a started supervisor may take to connect before the sandbox turns ERROR.
  public static let readyTimeout: Duration = .seconds(30)

  let root: String
  let pki: GatewayPKI?
  /// Opens the sandboxes' sealed environment values at launch (nil: sandboxes with sealed values fail).
  let vault: SecretVault?
  public let hub: SupervisorHub
  let supervisorBinary: String
  let usesTLS: Bool
  let runAsRoot = geteuid() == 0
  let runtimeDirectories = BubblewrapCommand.runtimeLibraryDirectories()
  /// Test-only: behave as on a kernel without Landlock (``GatewayConfiguration/simulateNoLandlock``).
  let simulateNoLandlock: Bool
  /// Extra upstream roots for the sandboxes' proxies (``GatewayConfiguration/upstreamTrustFile``).
  let upstreamTrustFile: String?
  /// Where per-sandbox cpu/memory limits go; nil on a host without a writable cgroup hierarchy.
  let cgroups = SandboxCgroups.detect()
  /// Per-sandbox network namespaces (allocation, setup, teardown).
  let networks: SandboxNetworks
  private let endpoint = Mutex<String?>(nil)
  private let instances = Mutex<[String: SandboxInstance]>([:])
  /// Validity of the sandboxes' client certificates (renewed at 2/3 of it: ``SandboxCertificateRenewal``).
  let sandboxCertificateLifetime: TimeInterval
  /// Instances being stopped on purpose (their exit is not a failure).
  private let stopping = Mutex<Set<String>>([])
  let queue = KeyedSerialQueue()
  let logger = Logger(label: "openshell.driver.local")

  /// - Parameters:
  ///   - dataDirectory: the gateway data directory (sandboxes live in `<dir>/sandboxes`).
  ///   - pki: issues each sandbox's client certificate (nil in plaintext-only setups: token only).
  ///   - supervisorBinary: path of `openshell-sandbox`; default `$OPENSHELL_SUPERVISOR_BIN`, else next
  ///     to the running executable.
  ///   - vault: opens sealed environment values (``SandboxEnvironmentSecrets``).
  ///   - simulateNoLandlock: test-only, see ``GatewayConfiguration/simulateNoLandlock``.
  ///   - upstreamTrustFile: see ``GatewayConfiguration/upstreamTrustFile``.
  ///   - sandboxCertificateLifetime: see ``GatewayConfiguration/sandboxCertificateLifetime``.
  public init(
    dataDirectory: String, pki: GatewayPKI?, hub: SupervisorHub, vault: SecretVault? = nil, usesTLS: Bool, supervisorBinary: String? = nil,
    simulateNoLandlock: Bool = false, upstreamTrustFile: String? = nil,
    sandboxCertificateLifetime: TimeInterval = GatewayPKI.defaultSandboxCertificateLifetime
  ) {
    self.sandboxCertificateLifetime = sandboxCertificateLifetime
    root = dataDirectory + "/sandboxes"
    self.simulateNoLandlock = simulateNoLandlock
    self.upstreamTrustFile = upstreamTrustFile
    self.pki = pki
    self.vault = vault
    self.hub = hub
    self.usesTLS = usesTLS
    self.supervisorBinary = supervisorBinary ?? Self.defaultSupervisorBinary()
    networks = SandboxNetworks(sandboxesDirectory: root)
    try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
  }

  static func defaultSupervisorBinary() -> String {
    if let p = ProcessInfo.processInfo.environment["OPENSHELL_SUPERVISOR_BIN"], !p.isEmpty { return p }
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return ((exe as NSString).deletingLastPathComponent as NSString).appendingPathComponent("openshell-sandbox")
  }

  /// The endpoint supervisors dial, e.g. `https://127.0.0.1:8080`; set once the port is bound.
  public func setEndpoint(_ url: String) { endpoint.withLock { $0 = url } }

  // MARK: spec validation

  public func unsupported(spec: Data) -> String? {
    guard let s = try? Openshell_V1_SandboxSpec(serializedBytes: spec) else { return "the sandbox spec does not decode" }
    let t = s.template
    if !t.image.isEmpty {
      return "the local driver runs sandboxes from the host root filesystem; OCI images (template.image \(t.image.debugDescription)) need the podman driver"
    }
    if !t.runtimeClassName.isEmpty { return "the local driver has no runtime classes (template.runtime_class_name)" }
    if s.hasResourceRequirements, s.resourceRequirements.hasGpu { return "the local driver does not support GPUs" }
    if t.hasResources, !t.resources.fields.isEmpty {
      let limits: ResourceLimits
      do { limits = try ResourceLimits.parse(t.resources) } catch { return "template.resources: \(error.message)" }
      if !limits.isEmpty {
        guard let cgroups else {
          return "cpu/memory limits (template.resources) need a writable cgroup hierarchy (v2 at /sys/fs/cgroup, or v1 memory/cpu), which this host does not provide"
        }
        if let why = cgroups.unsupported(limits) { return why }
      }
    }
    if t.hasDriverConfig, !t.driverConfig.fields.isEmpty { return "the local driver takes no driver_config" }
    if s.command.contains(where: { $0.utf8.contains(0) }) { return "spec.command contains NUL" }
    return nil
  }

  // MARK: reactor

  public func run(store: GatewayStore) async throws {
    while endpoint.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(20)) }
    hub.setListener { [weak self] event in
      guard let self else { return }
      switch event {
      case .connected(let id, _): self.schedule(id, store)
      case .disconnected, .mainProcessExited: break
      }
    }
    defer { hub.setListener(nil) }
    try await store.catchUp()
    let state = await store.state
    // Start-up sweep: adopt or restart what should run, clean up orphans.
    var ids = Set(state.sandboxes.keys)
    if let dirs = try? FileManager.default.contentsOfDirectory(atPath: root) { ids.formUnion(dirs) }
    let current = endpoint.withLock { $0 } ?? ""
    reapStrays(keepingInstancesOf: ids)
    for id in ids {
      if let instance = loadInstance(id), HostProcess.exitStatus(instance) == nil {
        if instance.endpoint == current {
          instances.withLock { $0[id] = instance }
        } else {
          // It was told another endpoint and cannot reconnect: replace it.
          queue.enqueue(id) { [self] in await stop(id) }
        }
      }
      schedule(id, store)
    }
    let from = min((try store.log.checkpoint(Self.checkpointName) ?? 0) + 1, state.lastSeq + 1)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await self.monitor(store) }
      group.addTask { try await self.resync(store) }
      group.addTask { try await self.renewCertificates(store) }
      group.addTask {
        var handled = from - 1
        var saved = handled
        var lastSave = ContinuousClock.now
        // Resubscribes when the subscription ends or fails (it must never stop silently).
        while !Task.isCancelled {
          do {
            for try await item in store.log.subscribe(from: handled + 1, filter: EventFilter(aggregateKind: "sandbox")) {
              guard case .record(let record) = item else { continue }
              self.schedule(record.aggregate.id, store)
              handled = record.seq
              if handled > saved, ContinuousClock.now - lastSave > .seconds(1) {
                try? store.log.setCheckpoint(Self.checkpointName, seq: handled)
                saved = handled
                lastSave = .now
              }
            }
          } catch is CancellationError {
            return
          } catch {
            self.logger.warning("sandbox event subscription failed, resubscribing: \(error)")
          }
          try await Task.sleep(for: .milliseconds(200))
        }
      }
      _ = try await group.next()
      group.cancelAll()
    }
  }

  /// Every 2 s, re-examines sandboxes in a transitional phase (a safety net: reconciling is idempotent).
  func resync(_ store: GatewayStore) async throws {
    while !Task.isCancelled {
      try await Task.sleep(for: .seconds(2))
      let state = await store.state
      for s in state.sandboxes.values where [.provisioning, .starting, .stopping, .deleting].contains(s.phase) {
        schedule(s.id, store)
      }
    }
  }

  /// Appends driver outcome events only if the sandbox is still in one of `phases` (optimistic
  /// concurrency on the sandbox aggregate: a user's stop/delete in between wins, never overwritten).
  @discardableResult
  func transition(_ id: String, from phases: Set<SandboxPhase>, _ events: [GatewayEvent], _ store: GatewayStore) async throws -> Bool {
    for _ in 0..<10 {
      try await store.catchUp()
      guard let s = await store.state.sandboxes[id], phases.contains(s.phase) else { return false }
      let version = try store.log.aggregateVersion(.sandbox(id))
      do {
        _ = try await store.execute(actor: "system", requestID: "") { _ in
          Decision(events: events, expecting: [.sandbox(id): .exact(version)])
        }
        return true
      } catch let e as EventLogError where e.code == .conflict {
        continue
      }
    }
    return false
  }

  func schedule(_ id: String, _ store: GatewayStore) {
    queue.enqueue(id) { [self] in
      do { try await reconcile(id, store) } catch { logger.warning("sandbox \(id): \(error)") }
    }
  }

  /// Watches running instances; an exit that nobody asked for turns the sandbox to ERROR.
  func monitor(_ store: GatewayStore) async throws {
    while !Task.isCancelled {
      try await Task.sleep(for: .milliseconds(200))
      let running = instances.withLock { $0 }
      for (id, instance) in running {
        guard !stopping.withLock({ $0.contains(id) }), let status = HostProcess.exitStatus(instance) else { continue }
        let gone = instances.withLock { all -> Bool in
          guard all[id] == instance else { return false }
          all[id] = nil
          return true
        }
        guard gone else { continue }
        queue.enqueue(id) { [self] in
          do { try await supervisorExited(id, instance, status: status, store) } catch { logger.warning("sandbox \(id): \(error)") }
        }
      }
    }
  }

  func supervisorExited(_ id: String, _ instance: SandboxInstance, status: Int32, _ store: GatewayStore) async throws {
    hub.disconnect(id)
    try await store.catchUp()
    guard let s = await store.state.sandboxes[id], [.provisioning, .starting, .ready].contains(s.phase) else { return }
    _ = s
    let detail = status < 0 ? "supervisor process disappeared" : status > 128 ? "supervisor was killed by signal \(status - 128)" : "supervisor exited with status \(status)"
    let tail = lastLines(of: dir(id) + "/supervisor.log", 3)
    let message = tail.isEmpty ? detail : "\(detail): \(tail)"
    if try await transition(id, from: [.provisioning, .starting, .ready], [GatewayEvent(.sandboxFailed(.with { $0.id = id; $0.reason = "SupervisorExited"; $0.message = message }))], store) {
      hub.logs.gateway(id, message, level: "ERROR")
    }
  }

  func reconcile(_ id: String, _ store: GatewayStore) async throws {
    try await store.catchUp()
    let state = await store.state
    guard let s = state.sandboxes[id] else {
      // Deleted (or never known): nothing may run, nothing may stay on disk.
      await stop(id)
      removeDirectory(id)
      return
    }
    switch s.phase {
    case .provisioning, .starting, .ready:
      if let instance = instances.withLock({ $0[id] }) {
        if s.phase != .ready, hub.connectedInstance(id) == instance.instanceID {
          if try await transition(id, from: [.provisioning, .starting], [GatewayEvent(.sandboxReady(.with { $0.id = id; $0.mainProcessStartedNs = instance.startedNs }))], store) {
            hub.logs.gateway(id, "supervisor connected; sandbox ready")
          }
        }
        return
      }
      if s.phase == .ready, hub.connectedInstance(id) != nil { return }
      try await start(s, state, store)
    case .stopping:
      await stop(id)
      if try await transition(id, from: [.stopping], [GatewayEvent(.sandboxStopped(.with { $0.id = id }))], store) {
        hub.logs.gateway(id, "sandbox stopped")
      }
    case .deleting:
      await stop(id)
      removeDirectory(id)
      hub.logs.remove(id)
      try await transition(id, from: [.deleting], [GatewayEvent(.sandboxDeleted(.with { $0.id = id }))], store)
    case .stopped, .error, .completed, .unknown, .unspecified:
      await stop(id)
      if s.phase == .error || s.phase == .completed { try await applyRestartPolicy(s, store) }
    }
  }

  // MARK: start and stop

  func dir(_ id: String) -> String { "\(root)/\(id)" }

  /// Sandboxes with a supervisor this driver started or adopted.
  func runningSandboxIDs() -> Set<String> { instances.withLock { Set($0.keys) } }

  func loadInstance(_ id: String) -> SandboxInstance? {
    guard let data = FileManager.default.contents(atPath: dir(id) + "/instance.json") else { return nil }
    return try? JSONDecoder().decode(SandboxInstance.self, from: data)
  }

  func start(_ s: SandboxRecord, _ state: GatewayState, _ store: GatewayStore) async throws {
    guard let endpoint = endpoint.withLock({ $0 }) else { return }
    if let why = unsupported(spec: s.spec) {
      try await transition(s.id, from: [.provisioning, .starting, .ready], [GatewayEvent(.sandboxFailed(.with { $0.id = s.id; $0.reason = "Unsupported"; $0.message = why }))], store)
      return
    }
    if let why = SandboxNetworks.unavailable(runAsRoot: runAsRoot) {
      hub.logs.gateway(s.id, "cannot start the sandbox: \(why)", level: "ERROR")
      try await transition(s.id, from: [.provisioning, .starting, .ready], [GatewayEvent(.sandboxFailed(.with { $0.id = s.id; $0.reason = "NetworkConfinementUnavailable"; $0.message = why }))], store)
      return
    }
    var events: [GatewayEvent] = []
    if s.driver.isEmpty {
      events.append(GatewayEvent(.sandboxProvisioning(.with { $0.id = s.id; $0.driver = name; $0.message = "starting the supervisor in bubblewrap namespaces" })))
    }
    if s.phase == .ready {
      // READY with no supervisor: its processes ended while the gateway was down (or the host rebooted).
      let message = "the sandbox's processes ended while the gateway was down; relaunched"
      events.append(GatewayEvent(.sandboxConditionSet(.with { $0.id = s.id; $0.type = "Relaunched"; $0.status = "True"; $0.reason = "ProcessesEnded"; $0.message = message })))
      hub.logs.gateway(s.id, message, level: "WARN")
    }
    do {
      // Confinement (startup-only sections of the effective policy), decided before anything runs.
      let (policy, source) = ConfinementPlanner.startupPolicy(s, state)
      let user = runAsRoot ? try SandboxUser.resolve() : nil
      let plan = ConfinementPlanner.plan(policy, user: user, simulateNoLandlock: simulateNoLandlock)
      let landlock = LandlockProbe.probe(simulateAbsent: plan.simulateNoLandlock)
      if case .unavailable(let reason, let kernel) = landlock, plan.landlockCompatibility == "hard_requirement" {
        let message = "landlock.compatibility is hard_requirement (\(source)) but kernel \(kernel) offers no Landlock: \(reason)"
        hub.logs.gateway(s.id, message, level: "ERROR")
        try await transition(s.id, from: [s.phase], events + [GatewayEvent(.sandboxFailed(.with { $0.id = s.id; $0.reason = "LandlockUnavailable"; $0.message = message }))], store)
        return
      }
      let condition = ConfinementPlanner.condition(plan, landlock, source: source)
      let current = s.conditions.first { $0.type == "Confinement" }
      if current?.status != condition.status || current?.reason != condition.reason || current?.message != condition.message {
        events.append(GatewayEvent(.sandboxConditionSet(.with {
          $0.id = s.id; $0.type = "Confinement"; $0.status = condition.status; $0.reason = condition.reason; $0.message = condition.message
        })))
      }
      if condition.status != "True" { hub.logs.gateway(s.id, "SECURITY (high): \(condition.message)", level: "ERROR") }
      let (instance, issued) = try launch(s, endpoint: endpoint, plan: plan, user: user)
      instances.withLock { $0[s.id] = instance }
      if let i = issued { events.append(Self.certificateIssued(sandboxID: s.id, i)) }
      hub.logs.gateway(s.id, "supervisor started (pid \(instance.pid), instance \(instance.instanceID))")
      if !events.isEmpty, try await !transition(s.id, from: [s.phase], events, store) {
        // A stop or delete arrived meanwhile: the reconcile queued for it stops what was just started.
        return
      }
      let id = s.id
      Task { [self] in
        try? await Task.sleep(for: Self.readyTimeout)
        queue.enqueue(id) { [self] in
          guard instances.withLock({ $0[id] }) == instance, hub.connectedInstance(id) != instance.instanceID,
            let cur = await store.state.sandboxes[id], cur.phase == .provisioning || cur.phase == .starting
          else { return }
          await stop(id)
          let tail = lastLines(of: dir(id) + "/supervisor.log", 3)
          _ = try? await transition(id, from: [.provisioning, .starting], [GatewayEvent(.sandboxFailed(.with {
            $0.id = id; $0.reason = "SupervisorNotReady"
            $0.message = "the supervisor did not connect within \(Self.readyTimeout)" + (tail.isEmpty ? "" : ": \(tail)")
          }))], store)
        }
      }
    } catch {
      events.append(GatewayEvent(.sandboxFailed(.with { $0.id = s.id; $0.reason = "SupervisorStartFailed"; $0.message = "\(error)" })))
      hub.logs.gateway(s.id, "cannot start the supervisor: \(error)", level: "ERROR")
      try await transition(s.id, from: [s.phase], events, store)
    }
  }

  /// Prepares the sandbox directory and starts bwrap. Writes instance.json before returning.
  /// - Parameters:
  ///   - plan: the workloads' confinement, written into launch.json.
  ///   - user: the host identity of `sandbox` (nil when the gateway is not root).
  func launch(_ s: SandboxRecord, endpoint: String, plan: ConfinementPlan, user: SandboxUser?) throws -> (SandboxInstance, CertificateIssuance?) {
    let fm = FileManager.default
    let base = dir(s.id)
    let workspace = base + "/workspace"
    let run = base + "/run"
    guard fm.isExecutableFile(atPath: supervisorBinary) else {
      throw SpawnError("supervisor binary \(supervisorBinary) not found (build the openshell-sandbox product or set OPENSHELL_SUPERVISOR_BIN)")
    }
    let launcherBinary = ((supervisorBinary as NSString).deletingLastPathComponent as NSString).appendingPathComponent(SandboxProtocol.launcherName)
    guard fm.isExecutableFile(atPath: launcherBinary) else {
      throw SpawnError("launcher binary \(launcherBinary) not found (build the openshell-sandbox-launch product next to openshell-sandbox)")
    }
    guard fm.isExecutableFile(atPath: "/usr/bin/bwrap") else { throw SpawnError("bubblewrap (/usr/bin/bwrap) is not installed (apt-get install bubblewrap)") }
    try fm.createDirectory(atPath: base, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    try fm.createDirectory(atPath: workspace, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    user?.own(workspace: workspace)
    try? fm.removeItem(atPath: run)
    try fm.createDirectory(atPath: run, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    func write(_ name: String, _ text: String, _ mode: Int) throws {
      guard fm.createFile(atPath: run + "/" + name, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
        throw SpawnError("cannot write \(run)/\(name)")
      }
    }
    var issuance: CertificateIssuance?
    if let pki, usesTLS {
      let cert = try pki.issueSandboxCertificate(sandboxID: s.id, lifetime: sandboxCertificateLifetime)
      try write("tls.crt", cert.certificatePEM, 0o644)
      try write("tls.key", cert.privateKeyPEM, 0o600)
      try write("ca.crt", cert.caCertificatePEM, 0o644)
      issuance = cert.issuance
    }
    try write("token", hub.token(for: s.id), 0o600)
    if let upstreamTrustFile {
      guard let pem = try? String(contentsOfFile: upstreamTrustFile, encoding: .utf8) else {
        throw SpawnError("cannot read the upstream trust file \(upstreamTrustFile)")
      }
      try write((SandboxProtocol.upstreamTrustFile as NSString).lastPathComponent, pem, 0o644)
    }
    // The sandbox's trust directory: the supervisor writes its CA certificate and bundle there.
    let trust = base + "/tls"
    try? fm.removeItem(atPath: trust)
    try fm.createDirectory(atPath: trust, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    try SandboxSSHHostKey.generate(in: run, comment: "openshell-sandbox-\(s.id)", owner: user)
    let spec = (try? Openshell_V1_SandboxSpec(serializedBytes: s.spec)) ?? .init()
    let env: [String: String]
    do { env = try SandboxEnvironmentSecrets.environment(of: s, vault: vault) } catch {
      throw SpawnError("cannot open the sandbox's environment values: \(error)")
    }
    let instanceID = RandomID.uuid()  // getrandom(2): no descriptor needed, never a constant (issue 17)
    // Root: a veth pair + nftables namespace made here. Otherwise the supervisor makes a private one.
    let allocation = runAsRoot ? try networks.setUp(s.id) : nil
    // The launcher enters the sandbox's network namespace first (ConfinementPlan.networkNamespacePath;
    // for a private namespace the supervisor fills it in).
    var confinement = plan
    if allocation != nil { confinement.networkNamespacePath = SandboxProtocol.networkNamespaceMount }
    // Baseline enrichment (OpenShell adds the proxy's trust paths): workloads read the CA files.
    confinement.readOnly.append(SandboxProtocol.trustDirectory)
    let launch = SupervisorLaunch(
      command: spec.command, environment: env, confinement: confinement, instanceID: instanceID,
      networkNamespacePath: allocation != nil ? SandboxProtocol.networkNamespaceMount : nil,
      proxyAddress: allocation.map { "\($0.hostAddress):\(SandboxProtocol.proxyPort)" },
      privateNetwork: allocation == nil ? true : nil)
    try write("launch.json", String(decoding: try JSONEncoder().encode(launch), as: UTF8.self), 0o644)
    // The sandbox's /etc/passwd and /etc/group (SandboxUser), outside the credentials directory.
    var identityFiles: (passwd: String, group: String)?
    if let user {
      let etc = base + "/etc"
      try? fm.removeItem(atPath: etc)
      try fm.createDirectory(atPath: etc, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
      guard fm.createFile(atPath: etc + "/passwd", contents: Data(user.passwd.utf8), attributes: [.posixPermissions: 0o644]),
        fm.createFile(atPath: etc + "/group", contents: Data(user.group.utf8), attributes: [.posixPermissions: 0o644])
      else { throw SpawnError("cannot write \(etc)/passwd and group") }
      identityFiles = (etc + "/passwd", etc + "/group")
    }

    let hostname = String(s.name.prefix(63))
    let command = BubblewrapCommand(
      hostname: hostname, workspace: workspace, credentials: run, supervisorBinary: supervisorBinary, launcherBinary: launcherBinary,
      runtimeLibraryDirectories: runtimeDirectories, runAsRoot: runAsRoot, identityFiles: identityFiles,
      network: allocation != nil ? .confined(namespaceFile: SandboxNetworks.namespaceFile(s.id)) : .private, trustDirectory: trust)
    let creds = SandboxProtocol.credentialsDirectory
    var environment = [
      "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": SandboxProtocol.workspace, "LANG": "C.UTF-8",
      SandboxProtocol.envSandboxID: s.id, SandboxProtocol.envSandboxName: s.name,
      SandboxProtocol.envEndpoint: endpoint, SandboxProtocol.envTokenFile: creds + "/token",
      SandboxProtocol.envLaunchFile: creds + "/launch.json",
    ]
    if issuance != nil {
      environment[SandboxProtocol.envTLSCA] = creds + "/ca.crt"
      environment[SandboxProtocol.envTLSCert] = creds + "/tls.crt"
      environment[SandboxProtocol.envTLSKey] = creds + "/tls.key"
    } else if usesTLS, let pki {
      try write("ca.crt", pki.caCertificatePEM, 0o644)
      environment[SandboxProtocol.envTLSCA] = creds + "/ca.crt"
    }
    // cpu/memory limits: the process joins the sandbox's cgroup(s) and then execs bwrap, so that every
    // process of the sandbox starts inside (a pid moved after bwrap forked would leave its children out).
    var executable = command.bwrapPath
    var arguments = command.arguments
    if hasLimits(spec), let cgroups {
      let limits: ResourceLimits
      let procs: [String]
      do {
        limits = try ResourceLimits.parse(spec.template.resources)
        procs = try cgroups.prepare(sandboxID: s.id, limits: limits)
      } catch {
        throw SpawnError("cannot apply the resource limits: \(error.message)")
      }
      if !procs.isEmpty {
        // Also: bwrap and the supervisor ask to be exempt from the OOM killer (-1000, inherited; each workload's
        // launcher raises its own score to 1000). Hosts that refuse the lowering (some containers) keep 0.
        let script = #"echo -1000 2>/dev/null > /proc/self/oom_score_adj; while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#
        arguments = ["-c", script, "openshell-cgroup-join"] + procs + ["--", executable] + arguments
        executable = "/bin/sh"
      }
    }
    let process = try Spawner.spawn(
      executable, arguments, environment: environment,
      stdout: .appendFile(base + "/supervisor.log"), stderr: .appendFile(base + "/supervisor.log"),
      newSession: true, fd3File: base + "/bwrap-info.json")
    let ticks = HostProcess.stat(process.pid)?.startTicks ?? 0
    let instance = SandboxInstance(
      pid: process.pid, startTicks: ticks, instanceID: instanceID, endpoint: endpoint,
      startedNs: Int64(Date().timeIntervalSince1970 * 1e9))
    do {
      try JSONEncoder().encode(instance).write(to: URL(fileURLWithPath: base + "/instance.json"))
    } catch {
      // Unrecorded, it would run unknown to any later gateway (e.g. on a full disk): end it now.
      kill(process.pid, SIGKILL)
      _ = Spawner.waitBlocking(process.pid)
      reapStrays(s.id)
      throw error
    }
    return (instance, issuance)
  }

  /// Stops whatever runs for `id`: SIGTERM to the supervisor, SIGKILL to the PID namespace after 3 s.
  func stop(_ id: String) async {
    let instance = instances.withLock { $0[id] } ?? loadInstance(id)
    hub.disconnect(id)
    guard let instance, HostProcess.exitStatus(instance) == nil else {
      instances.withLock { $0[id] = nil }
      reapStrays(id)
      cgroups?.remove(sandboxID: id)
      networks.tearDown(id)
      return
    }
    stopping.withLock { _ = $0.insert(id) }
    defer { stopping.withLock { _ = $0.remove(id) } }
    // bwrap writes the namespace init's pid right after it started; killing only the outer bwrap
    // would leave the sandbox running, so wait for it (briefly) first.
    var nsInit = HostProcess.namespaceInit(infoFile: dir(id) + "/bwrap-info.json")
    for _ in 0..<100 where nsInit == nil && HostProcess.exitStatus(instance) == nil {
      try? await Task.sleep(for: .milliseconds(10))
      nsInit = HostProcess.namespaceInit(infoFile: dir(id) + "/bwrap-info.json")
    }
    if let nsInit {
      let supervisors = HostProcess.children(nsInit)
      if supervisors.isEmpty { kill(nsInit, SIGKILL) }
      for child in supervisors { kill(child, SIGTERM) }
    } else {
      kill(instance.pid, SIGKILL)
    }
    for _ in 0..<30 {
      if HostProcess.exitStatus(instance) != nil { break }
      try? await Task.sleep(for: .milliseconds(100))
    }
    if HostProcess.exitStatus(instance) == nil {
      if let nsInit { kill(nsInit, SIGKILL) }
      kill(instance.pid, SIGKILL)
      for _ in 0..<50 {
        if HostProcess.exitStatus(instance) != nil { break }
        try? await Task.sleep(for: .milliseconds(20))
      }
    }
    // Whatever still runs in the sandbox's PID namespace (commands orphaned by the supervisor's exit keep
    // bwrap's init alive) ends with the init.
    if let nsInit = HostProcess.liveNamespaceInit(infoFile: dir(id) + "/bwrap-info.json") {
      kill(nsInit, SIGKILL)
      for _ in 0..<50 where HostProcess.liveNamespaceInit(infoFile: dir(id) + "/bwrap-info.json") != nil {
        try? await Task.sleep(for: .milliseconds(20))
      }
    }
    instances.withLock { $0[id] = nil }
    reapStrays(id)
    try? FileManager.default.removeItem(atPath: dir(id) + "/instance.json")
    cgroups?.remove(sandboxID: id)
    networks.tearDown(id)
  }

  /// Whether the spec asks for cpu/memory limits (validated at create by `unsupported(spec:)`).
  func hasLimits(_ spec: Openshell_V1_SandboxSpec) -> Bool {
    spec.template.hasResources && !spec.template.resources.fields.isEmpty
  }

  func removeDirectory(_ id: String) {
    guard FileManager.default.fileExists(atPath: dir(id)) else { return }
    try? FileManager.default.removeItem(atPath: dir(id))
  }

  func lastLines(of path: String, _ n: Int) -> String {
    guard let data = FileManager.default.contents(atPath: path) else { return "" }
    return String(decoding: data.suffix(4096), as: UTF8.self).split(separator: "\n").suffix(n).joined(separator: " | ")
  }

  /// Test support: stops every sandbox this driver runs (the gateway itself leaves them running).
  public func stopAll() async {
    let ids = Array(instances.withLock { $0.keys })
    for id in ids { await stop(id) }
  }

  /// Test support: the host pid of a sandbox's supervisor process, if it runs.
  public func supervisorPID(_ id: String) -> Int32? {
    guard let nsInit = HostProcess.namespaceInit(infoFile: dir(id) + "/bwrap-info.json") else { return nil }
    return HostProcess.children(nsInit).first
  }
}
