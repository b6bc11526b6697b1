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
  /// Driver name reported in GetGatewayInfo and `sandbox.provisioning` events.
  public let name = "local"
  /// Name of the driver's checkpoint in the event log (last record it has handled).
  public static let checkpointName = "local-driver"
  /// How long a started supervisor may take to connect before the sandbox turns ERROR, by default.
  public static let defaultReadyTimeout: Duration = .seconds(30)
  /// How long a started (or, after a gateway restart, adopted) supervisor may take to connect before the
  /// sandbox turns ERROR (``armReadyTimeout(_:_:_:)``).
  let readyTimeout: Duration

  let root: String
  let pki: GatewayPKI?
  /// Opens the sandboxes' sealed environment values at launch (nil: sandboxes with sealed values fail).
  let vault: SecretVault?
  /// Supervisor sessions, relays and sandbox logs of the sandboxes this driver starts.
  public let hub: SupervisorHub
  let supervisorBinary: String
  let usesTLS: Bool
  let runAsRoot = geteuid() == 0
  /// Test-only: behave as on a kernel without Landlock (``GatewayConfiguration/simulateNoLandlock``).
  let simulateNoLandlock: Bool
  /// Extra upstream roots for the sandboxes' proxies (``GatewayConfiguration/upstreamTrustFile``).
  let upstreamTrustFile: String?
  /// Where per-sandbox cpu/memory limits go; nil on a host without a writable cgroup hierarchy.
  let cgroups = SandboxCgroups.detect()
  /// Per-sandbox network namespaces (allocation, setup, teardown).
  let networks: SandboxNetworks
  let endpoint = Mutex<String?>(nil)
  let instances = Mutex<[String: SandboxInstance]>([:])
  /// Validity of the sandboxes' client certificates (renewed at 2/3 of it: ``SandboxCertificateRenewal``).
  let sandboxCertificateLifetime: TimeInterval
  /// Instances being stopped on purpose (their exit is not a failure).
  let stopping = Mutex<Set<String>>([])
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
  ///   - readyTimeout: see ``GatewayConfiguration/supervisorReadyTimeout``.
  public init(
    dataDirectory: String, pki: GatewayPKI?, hub: SupervisorHub, vault: SecretVault? = nil, usesTLS: Bool, supervisorBinary: String? = nil,
    simulateNoLandlock: Bool = false, upstreamTrustFile: String? = nil,
    sandboxCertificateLifetime: TimeInterval = GatewayPKI.defaultSandboxCertificateLifetime, readyTimeout: Duration = defaultReadyTimeout
  ) {
    self.sandboxCertificateLifetime = sandboxCertificateLifetime
    self.readyTimeout = readyTimeout
    root = dataDirectory + "/sandboxes"
    self.simulateNoLandlock = simulateNoLandlock
    self.upstreamTrustFile = upstreamTrustFile
    self.pki = pki
    self.vault = vault
    self.hub = hub
    self.usesTLS = usesTLS
    self.supervisorBinary = supervisorBinary ?? Self.defaultSupervisorBinary()
    try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
    networks = SandboxNetworks(sandboxesDirectory: root)  // after the directory exists: its canonical path names namespaces
  }

  static func defaultSupervisorBinary() -> String {
    if let p = ProcessInfo.processInfo.environment["OPENSHELL_SUPERVISOR_BIN"], !p.isEmpty { return p }
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return ((exe as NSString).deletingLastPathComponent as NSString).appendingPathComponent("openshell-sandbox")
  }

  /// The endpoint supervisors dial, e.g. `https://127.0.0.1:8080`; set once the port is bound.
  public func setEndpoint(_ url: String) { endpoint.withLock { $0 = url } }

  // MARK: spec validation

  /// Refuses what the local driver cannot honour: OCI images, runtime classes, GPUs, driver_config, NUL in the
  /// command, and cpu/memory limits that are invalid or that this host's cgroups cannot apply. nil = supported.
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
          return
            "cpu/memory limits (template.resources) need a writable cgroup hierarchy (v2 at /sys/fs/cgroup, or v1 memory/cpu), which this host does not provide"
        }
        if let why = cgroups.unsupported(limits) { return why }
      }
    }
    if t.hasDriverConfig, !t.driverConfig.fields.isEmpty { return "the local driver takes no driver_config" }
    if s.command.contains(where: { $0.utf8.contains(0) }) { return "spec.command contains NUL" }
    return nil
  }

  // MARK: reactor

  /// The reactor: waits for the endpoint, reconciles every sandbox in the state and on disk (adopts live
  /// instances, restarts or cleans up the rest), then follows the log and acts on new sandbox events. Runs
  /// until cancelled. Throws when the store cannot catch up with the log or one of its monitoring tasks fails.
  public func run(store: GatewayStore) async throws {
    while endpoint.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(20)) }
    hub.setListener { [weak self] event in
      guard let self else { return }
      switch event {
      case .connected(let id, let instanceID):
        // READY first (the reconcile runs on the sandbox's queue); then, as it has read launch.json, its
        // environment values leave the disk.
        self.schedule(id, store)
        self.scrubLaunchEnvironment(id, instanceID: instanceID)
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
          // One that had not connected yet gets the same deadline as one this gateway started (it may have been
          // stalled; its launch.json still holds the environment values until it connects or is stopped).
          armReadyTimeout(id, instance, store)
        } else {
          // It was told another endpoint and cannot reconnect: replace it.
          queue.enqueue(id) { [self] in await stop(id) }
        }
      } else {
        // Nothing runs that still has to read it (a crash between a start and its supervisor's connect).
        scrubLaunchEnvironment(id, instanceID: nil)
      }
      schedule(id, store)
    }
    // The sweep above reconciled every sandbox in the state and on disk, which is all that the records up to
    // `state.lastSeq` would schedule (reconciling acts on the current state): follow from there, instead of
    // re-reading every sandbox record since a checkpoint saved at most once a second (issue 14).
    let from = state.lastSeq + 1
    if (try? store.log.checkpoint(Self.checkpointName)) ?? nil ?? 0 < state.lastSeq {
      try? store.log.setCheckpoint(Self.checkpointName, seq: state.lastSeq)
    }
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
    // One that ended before it connected left its environment values in launch.json; a restart writes them anew.
    scrubLaunchEnvironment(id, instanceID: instance.instanceID)
    try await store.catchUp()
    guard let s = await store.state.sandboxes[id], [.provisioning, .starting, .ready].contains(s.phase) else { return }
    _ = s
    let detail =
      status < 0
      ? "supervisor process disappeared" : status > 128 ? "supervisor was killed by signal \(status - 128)" : "supervisor exited with status \(status)"
    let tail = lastLines(of: dir(id) + "/supervisor.log", 3)
    let message = tail.isEmpty ? detail : "\(detail): \(tail)"
    if try await transition(
      id, from: [.provisioning, .starting, .ready],
      [
        GatewayEvent(
          .sandboxFailed(
            .with {
              $0.id = id; $0.reason = "SupervisorExited"; $0.message = message
            }))
      ], store)
    {
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
        // A connected supervisor: bwrap has bound /etc long ago, so the gateway's copy can go — after READY
        // is durable (an unmount waits for an RCU grace period, which READY need not); its session's
        // `supervisor.connected` audit may now be recorded (``SupervisorHub/expectConnectHandled(_:token:)``).
        let connected = hub.connectedInstance(id) == instance.instanceID
        defer {
          if connected {
            hub.connectHandled(id)
            SandboxEtcView.detach(base: dir(id))
          }
        }
        if s.phase != .ready, connected {
          if try await transition(
            id, from: [.provisioning, .starting],
            [
              GatewayEvent(
                .sandboxReady(
                  .with {
                    $0.id = id; $0.mainProcessStartedNs = instance.startedNs
                  }))
            ], store)
          {
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
}
