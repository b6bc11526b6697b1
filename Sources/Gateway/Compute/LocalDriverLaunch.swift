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

/// Starting a sandbox: its directory, identity, confinement plan and the bubblewrap command that runs its
/// supervisor (``LocalComputeDriver/launch(_:endpoint:plan:user:)``).
extension LocalComputeDriver {
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
      try await transition(
        s.id, from: [.provisioning, .starting, .ready],
        [
          GatewayEvent(
            .sandboxFailed(
              .with {
                $0.id = s.id; $0.reason = "Unsupported"; $0.message = why
              }))
        ], store)
      return
    }
    if let why = SandboxNetworks.unavailable(runAsRoot: runAsRoot) {
      hub.logs.gateway(s.id, "cannot start the sandbox: \(why)", level: "ERROR")
      try await transition(
        s.id, from: [.provisioning, .starting, .ready],
        [
          GatewayEvent(
            .sandboxFailed(
              .with {
                $0.id = s.id; $0.reason = "NetworkConfinementUnavailable"; $0.message = why
              }))
        ], store)
      return
    }
    var events: [GatewayEvent] = []
    if s.driver.isEmpty {
      events.append(
        GatewayEvent(
          .sandboxProvisioning(
            .with {
              $0.id = s.id; $0.driver = name; $0.message = "starting the supervisor in bubblewrap namespaces"
            })))
    }
    if s.phase == .ready {
      // READY with no supervisor: its processes ended while the gateway was down (or the host rebooted).
      let message = "the sandbox's processes ended while the gateway was down; relaunched"
      events.append(
        GatewayEvent(
          .sandboxConditionSet(
            .with {
              $0.id = s.id; $0.type = "Relaunched"; $0.status = "True"; $0.reason = "ProcessesEnded"; $0.message = message
            })))
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
        try await transition(
          s.id, from: [s.phase],
          events + [
            GatewayEvent(
              .sandboxFailed(
                .with {
                  $0.id = s.id; $0.reason = "LandlockUnavailable"; $0.message = message
                }))
          ], store)
        return
      }
      let condition = ConfinementPlanner.condition(plan, landlock, source: source)
      let current = s.conditions.first { $0.type == "Confinement" }
      if current?.status != condition.status || current?.reason != condition.reason || current?.message != condition.message {
        events.append(
          GatewayEvent(
            .sandboxConditionSet(
              .with {
                $0.id = s.id; $0.type = "Confinement"; $0.status = condition.status; $0.reason = condition.reason; $0.message = condition.message
              })))
      }
      if condition.status != "True" { hub.logs.gateway(s.id, "SECURITY (high): \(condition.message)", level: "ERROR") }
      let (instance, issued) = try await launch(s, endpoint: endpoint, plan: plan, user: user)
      instances.withLock { $0[s.id] = instance }
      if let i = issued { events.append(Self.certificateIssued(sandboxID: s.id, i)) }
      hub.logs.gateway(s.id, "supervisor started (pid \(instance.pid), instance \(instance.instanceID))")
      if !events.isEmpty, try await !transition(s.id, from: [s.phase], events, store) {
        // A stop or delete arrived meanwhile: the reconcile queued for it stops what was just started.
        return
      }
      armReadyTimeout(s.id, instance, store)
    } catch {
      // One line (a Foundation error's description is an `NSError` dump of its user info).
      let message = errorLine(error)
      events.append(
        GatewayEvent(
          .sandboxFailed(
            .with {
              $0.id = s.id; $0.reason = "SupervisorStartFailed"; $0.message = message
            })))
      hub.logs.gateway(s.id, "cannot start the supervisor: \(message)", level: "ERROR")
      try await transition(s.id, from: [s.phase], events, store)
    }
  }

  /// A supervisor that has not connected within ``readyTimeout`` of its start (or of this gateway's start, for one
  /// it adopted) is stopped (which also scrubs `launch.json`) and its sandbox turns ERROR with reason
  /// `SupervisorNotReady`, when the sandbox is still PROVISIONING or STARTING and `instance` still the one that runs.
  func armReadyTimeout(_ id: String, _ instance: SandboxInstance, _ store: GatewayStore) {
    Task { [self] in
      try? await Task.sleep(for: readyTimeout)
      queue.enqueue(id) { [self] in
        guard instances.withLock({ $0[id] }) == instance, hub.connectedInstance(id) != instance.instanceID,
          let cur = await store.state.sandboxes[id], cur.phase == .provisioning || cur.phase == .starting
        else { return }
        await stop(id)
        let tail = lastLines(of: dir(id) + "/supervisor.log", 3)
        let message = "the supervisor did not connect within \(readyTimeout)" + (tail.isEmpty ? "" : ": \(tail)")
        if (try? await transition(
          id, from: [.provisioning, .starting],
          [
            GatewayEvent(
              .sandboxFailed(
                .with {
                  $0.id = id; $0.reason = "SupervisorNotReady"; $0.message = message
                }))
          ], store)) == true
        {
          hub.logs.gateway(id, message, level: "ERROR")
        }
      }
    }
  }

  /// Prepares the sandbox directory and starts bwrap. Writes instance.json before returning.
  /// - Parameters:
  ///   - plan: the workloads' confinement, written into launch.json.
  ///   - user: the host identity of `sandbox` (nil when the gateway is not root).
  /// Environment variable of the test-only crash point: `1` ends the gateway process right after it spawned a
  /// supervisor and before it recorded `instance.json` (exit status ``testExitAfterSpawnStatus``). Tests only.
  static let testExitAfterSpawnVariable = "OPENSHELL_TEST_EXIT_AFTER_SPAWN"
  /// Exit status of the test-only crash point.
  static let testExitAfterSpawnStatus: Int32 = 86

  func launch(_ s: SandboxRecord, endpoint: String, plan: ConfinementPlan, user: SandboxUser?) async throws -> (SandboxInstance, CertificateIssuance?) {
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
    // Root: a veth pair + nftables namespace, prepared on a thread of its own while the certificate, the SSH host
    // key and the files are made (issue 14: it was the longest step of create → READY, and ran after them).
    // Otherwise the supervisor makes a private one.
    let networkSetUp: Task<SandboxNetworks.Allocation, Error>? =
      runAsRoot ? Task { [networks, id = s.id] in try await Self.onOwnThread { try networks.setUp(id) } } : nil
    // The sandbox's /etc/passwd and /etc/group (SandboxUser), outside the credentials directory; without
    // root they name the gateway's own uid (the only one bubblewrap's user namespace maps) `sandbox`.
    // With root, /etc is one overlay of them over the host's (SandboxEtcView); otherwise (or where no overlay
    // can be mounted) bwrap binds the host's entries one by one. Made on a thread of its own beside the rest
    // (issue 14: the overlay's files, whiteouts and mount ran after everything else before bwrap started).
    let identity = user ?? SandboxUser.rootless()
    let etcMount = Task { [passwd = identity.passwd, group = identity.group] in
      try await Self.onOwnThread { () throws -> EtcMount in
        let (view, fallback) = try SandboxEtcView.mount(base: base, passwd: passwd, group: group)
        return EtcMount(view: view, fallback: fallback, submounts: view == nil ? [] : SandboxEtcView.hostSubmounts())
      }
    }
    let allocation: SandboxNetworks.Allocation?
    let issuance: CertificateIssuance?
    let env: [String: String]
    let etc: EtcMount
    do {
      (issuance, env) = try await prepareRunDirectory(s, base: base, workspace: workspace, run: run, user: user)
      allocation = try await networkSetUp?.value
      etc = try await etcMount.value
    } catch {
      if let networkSetUp, (try? await networkSetUp.value) != nil { await networks.tearDownOffPool(s.id) }
      // Not left mounted by a start that failed (the next start or the stop would detach it too).
      if (try? await etcMount.value)?.view != nil { SandboxEtcView.detach(base: base) }
      throw error
    }
    // No fsync per file (FileWriting): all of them are made again at every start.
    func write(_ name: String, _ text: String, _ mode: Int) throws {
      try FileWriting.write(run + "/" + name, text, mode: mode_t(mode))
    }
    let trust = base + "/tls"
    let spec = (try? Openshell_V1_SandboxSpec(serializedBytes: s.spec)) ?? .init()
    let instanceID = RandomID.uuid()  // getrandom(2): no descriptor needed, never a constant (issue 17)
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
    if runAsRoot, let fallback = etc.fallback { hub.logs.gateway(s.id, "/etc is bound entry by entry (slower start): \(fallback)", level: "WARN") }
    let etcTop = base + "/" + SandboxEtcView.topName
    let identityFiles = (passwd: etcTop + "/passwd", group: etcTop + "/group")

    let hostname = String(s.name.prefix(63))
    let command = BubblewrapCommand(
      hostname: hostname, workspace: workspace, credentials: run, supervisorBinary: supervisorBinary, launcherBinary: launcherBinary,
      runAsRoot: runAsRoot, identityFiles: identityFiles,
      etcView: etc.view.map { ($0, etc.submounts) },
      network: allocation != nil ? .confined(namespaceFile: networks.namespaceFile(s.id)) : .private, trustDirectory: trust)
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
        procs = try cgroups.prepare(sandboxID: cgroupName(s.id), limits: limits)
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
    // Test switch (tests only): the gateway process ends here, between the spawn and its record, as a
    // kill -9 at the worst moment would (SandboxOrphanTests.gatewayKilledBetweenSpawnAndRecord).
    if ProcessInfo.processInfo.environment[Self.testExitAfterSpawnVariable] == "1" { _exit(Self.testExitAfterSpawnStatus) }
    let ticks = HostProcess.stat(process.pid)?.startTicks ?? 0
    let instance = SandboxInstance(
      pid: process.pid, startTicks: ticks, instanceID: instanceID, endpoint: endpoint,
      startedNs: Int64(Date().timeIntervalSince1970 * 1e9))
    do {
      // Atomically (a temporary file renamed over it): a crash mid-write leaves the previous record or
      // none, never a truncated one that a restarted gateway could not read (its processes would then be
      // known only by their marks, StrayProcesses). Not flushed: it guards against a gateway that crashes, whose
      // writes the kernel keeps; after a host crash nothing it names runs any more.
      try FileWriting.write(base + "/instance.json", JSONEncoder().encode(instance), mode: 0o644, atomically: true)
    } catch {
      // Unrecorded, it would run unknown to any later gateway (e.g. on a full disk): end it now.
      kill(process.pid, SIGKILL)
      _ = Spawner.waitBlocking(process.pid)
      reapStrays(s.id)
      throw error
    }
    return (instance, issuance)
  }
  /// The sandbox's `/etc` as ``SandboxEtcView/mount(base:passwd:group:hostEtc:)`` left it, with the host's mount
  /// points under `/etc` that bwrap binds over an overlay.
  struct EtcMount: Sendable {
    var view: String?
    var fallback: String?
    var submounts: [String]
  }

  /// The sandbox's workspace, credentials (`run/`: certificate, token, upstream trust, SSH host key) and trust
  /// (`tls/`) directories, and its environment values. Runs while the network namespace is being prepared.
  /// - Returns: the certificate issued (nil without TLS) and the environment values.
  func prepareRunDirectory(_ s: SandboxRecord, base: String, workspace: String, run: String, user: SandboxUser?) async throws -> (
    CertificateIssuance?, [String: String]
  ) {
    let fm = FileManager.default
    try fm.createDirectory(atPath: workspace, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    user?.own(workspace: workspace)
    try? fm.removeItem(atPath: run)
    try fm.createDirectory(atPath: run, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    // No fsync per file (FileWriting): all of them are made again at every start.
    func write(_ name: String, _ text: String, _ mode: Int) throws {
      try FileWriting.write(run + "/" + name, text, mode: mode_t(mode))
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
    try await SandboxSSHHostKey.generate(in: run, comment: "openshell-sandbox-\(s.id)", owner: user)
    do { return (issuance, try SandboxEnvironmentSecrets.environment(of: s, vault: vault)) } catch {
      throw SpawnError("cannot open the sandbox's environment values: \(error)")
    }
  }

  /// Runs blocking `body` (process starts and waits) on a thread of its own, not on one of the cooperative
  /// pool's few threads.
  static func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
      Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
  }
}
