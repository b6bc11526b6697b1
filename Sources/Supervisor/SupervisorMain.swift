import CNameService
import CSockDiag
import Dispatch
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import RelayTransport
import SandboxProtocol
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell-sandbox`: the supervisor inside a sandbox (started by the gateway's compute driver).
///
/// 1. Starts pushing its log lines (PushSandboxLogs) — before anything else, as OpenShell's does.
/// 2. Once the first session is accepted (READY), starts the main process (`spec.command`, if any) as the workload user; its stdout/stderr lines
///    become log lines (target `main`); its exit is reported with ReportMainProcessExit.
/// 3. Keeps `ConnectSupervisor` open (the hello is the "ready" report), reconnecting with backoff
///    (200 ms doubling to 1 s), and answers `RelayOpen{service_id: "exec"}` by dialling `RelayStream`
///    and running the command (protocol: SandboxProtocol).
/// 4. With network confinement (launch.json names a namespace and a proxy address, or asks for a
///    private namespace: ``PrivateNetwork``), runs the sandbox's policy proxy (``NetworkEnforcement``)
///    before anything else starts a workload.
/// SIGTERM: kills every workload process group, sends the proxy's pending denial and credential
/// substitution reports (``StopFlush``, at most 2 s: the gateway's SIGKILL comes after 3 s) and exits 0.
/// Workload processes are started through the launcher `openshell-sandbox-launch` (``Workload``).
@main
struct SupervisorMain {
  /// Runs ``run()`` on the cooperative pool and parks the main thread until it returns. Not an `async`
  /// main: Swift's async main ends the main thread through `dispatch_main` → `pthread_exit`, a forced
  /// unwind, and in this fully static executable libgcc's unwinder first sorts every frame description
  /// entry of the 185 MB binary (~300–400 ms of CPU before the first main-actor job ran; issue 14,
  /// CreateSandbox → READY). Nothing in the supervisor runs on the main actor.
  static func main() {
    let finished = DispatchSemaphore(value: 0)
    Task.detached {
      await run()
      finished.signal()
    }
    finished.wait()
  }

  /// The supervisor's life: the steps in the type's description.
  static func run() async {
    // Before any lookup: only glibc's built-in files and dns services (``cnameservice_pin_files_and_dns``).
    if cnameservice_pin_files_and_dns() != 0 {
      FileHandle.standardError.write(Data("openshell-sandbox: cannot pin the name services to files and dns: \(String(cString: strerror(errno)))\n".utf8))
      exit(2)
    }
    signal(SIGPIPE, SIG_IGN)
    // SSH relay messages (256 KiB) reuse freed heap memory instead of faulting in fresh pages.
    MallocTuning.forByteStreams()
    var loaded: SupervisorConfig
    do { loaded = try SupervisorConfig.fromEnvironment() } catch {
      FileHandle.standardError.write(Data("openshell-sandbox: \(error)\n".utf8))
      exit(2)
    }
    // Without root the supervisor makes the workloads' network namespace itself, before any workload
    // can start (PrivateNetwork); every launch then enters it.
    var privateNetwork: PrivateNetwork?
    if loaded.launch.privateNetwork == true {
      // Same user as the workloads: not dumpable, so that they cannot read its memory or descriptors
      // through /proc (real credential values, the sandbox CA key) even where Landlock is missing.
      let r = csockdiag_set_dumpable(0)
      if r != 0 {
        FileHandle.standardError.write(Data("openshell-sandbox: PR_SET_DUMPABLE 0: \(String(cString: strerror(-r)))\n".utf8))
        exit(3)
      }
      do {
        let p = try PrivateNetwork.create()
        loaded.launch.networkNamespacePath = p.namespacePath
        loaded.launch.confinement?.networkNamespacePath = p.namespacePath
        loaded.launch.proxyAddress = p.proxyAddress
        privateNetwork = p
      } catch {
        FileHandle.standardError.write(Data("openshell-sandbox: \(error)\n".utf8))
        exit(3)
      }
    }
    let config = loaded
    let workload = Workload(launch: config.launch)
    let term = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
    signal(SIGTERM, SIG_IGN)
    // @Sendable: not isolated to the main actor (main's isolation), whose check would trap on the
    // global queue (SIGILL in _dispatch_assert_queue_fail: the supervisor died by SIGILL on every SIGTERM).
    term.setEventHandler { @Sendable in
      workload.killAll()
      StopFlush.run(timeout: .seconds(2))
      exit(0)
    }
    term.resume()

    let logs = LogPusher(sandboxID: config.sandboxID)
    logs.log("supervisor starting (sandbox \(config.sandboxID), instance \(config.launch.instanceID), pid \(getpid()), uid \(getuid()))")
    let confinement = ConfinementStatus.startup(config.launch.confinement)
    logs.log(confinement.line, level: confinement.level)
    if confinement.fatal {
      FileHandle.standardError.write(Data("openshell-sandbox: \(confinement.line)\n".utf8))
      exit(3)
    }
    // The network enforcement (sandbox CA, trust files, proxy) starts now, on another thread, while this one
    // builds the gateway transport's TLS context: both are CPU work and neither needs the other (issue 14,
    // CreateSandbox → READY). Nothing starts a workload before it is up (``networkUp``).
    let ownNetwork = privateNetwork
    let networkStart = Task.detached {
      try await NetworkEnforcement.start(config.launch, privateNetwork: ownNetwork, sandboxID: config.sandboxID, logs: logs)
    }
    let transport: RenewingTransport
    do {
      transport = try RenewingTransport(certificatePath: config.certPath, note: { logs.log($0) }, make: { try config.makeTransport() })
    } catch {
      FileHandle.standardError.write(Data("openshell-sandbox: \(error)\n".utf8))
      exit(2)
    }
    let grpc = GRPCClient(transport: transport)
    let client = Openshell_V1_OpenShell.Client(wrapping: grpc)
    let metadata = config.metadata
    // The session to the gateway starts now and connects while the network enforcement starts; it says
    // hello (and the sandbox becomes READY) only once the proxy listens. The main process starts once the
    // gateway accepted the first session (the sandbox is READY), so its exit is never reported before READY.
    let ready = AsyncGate()
    let networkUp = AsyncGate()
    await withTaskGroup(of: Void.self) { group in
      group.addTask { try? await grpc.runConnections() }
      group.addTask {
        await Session(config: config, workload: workload, logs: logs, client: client, metadata: metadata, ready: ready, networkUp: networkUp).run()
      }
      let network: NetworkEnforcement?
      do { network = try await networkStart.value } catch {
        logs.log("cannot start network enforcement: \(error)", level: "ERROR")
        FileHandle.standardError.write(Data("openshell-sandbox: cannot start network enforcement: \(error)\n".utf8))
        exit(3)
      }
      let agent = ConfigAgent(config: config, logs: logs, grpc: grpc, metadata: metadata, proxyPolicy: network?.policy)
      if let network {
        let reports = Openshell_Audit_V1_SandboxAuditReports.Client(wrapping: grpc)
        group.addTask { await network.denials.run(client, metadata: metadata) }
        group.addTask { await network.substitutions.run(reports, metadata: metadata) }
        group.addTask {
          await ready.wait()
          network.startDeferredWork()
        }
        StopFlush.set {
          async let denials: Void = network.denials.flush(client, metadata: metadata)
          async let substitutions: Void = network.substitutions.flush(reports, metadata: metadata)
          _ = await (denials, substitutions)
        }
      }
      let providerEnvironment = ProviderEnvironmentAgent(config: config, logs: logs, client: client, metadata: metadata)
      group.addTask { await providerEnvironment.run() }
      group.addTask { await agent.run() }
      group.addTask { await logs.run(client, metadata: metadata) }
      networkUp.open()
      if !config.launch.command.isEmpty {
        group.addTask {
          await ready.wait()
          await runMainProcess(config, workload, logs, client, metadata)
        }
      }
      await group.waitForAll()
    }
  }

  static func runMainProcess(
    _ config: SupervisorConfig, _ workload: Workload, _ logs: LogPusher,
    _ client: Openshell_V1_OpenShell.Client<RenewingTransport>, _ metadata: Metadata
  ) async {
    let command = config.launch.command
    logs.log("starting main process: \(command.joined(separator: " "))")
    let code: Int32
    do {
      await ProviderEnvironmentAgent.waitUntilFetched(timeout: .seconds(5))
      let p = try workload.spawn(command, environment: [:], workdir: SandboxProtocol.workspace)
      close(p.stdin!)
      async let out: Void = forwardLines(p.stdout!, logs, level: "INFO")
      async let err: Void = forwardLines(p.stderr!, logs, level: "WARN")
      code = await Spawner.wait(p.pid)
      workload.finished(p.pid)
      _ = await (out, err)
    } catch {
      logs.log("cannot start the main process: \(error)", level: "ERROR")
      code = (error as? Workload.CommandError)?.exitCode ?? 127
    }
    logs.log("main process exited with code \(code)")
    // Its output reaches the gateway before the exit does (the gateway then stops the sandbox).
    await logs.drain(timeout: .seconds(3))
    var backoff = Duration.milliseconds(200)
    for _ in 0..<60 {
      do {
        _ = try await client.reportMainProcessExit(
          .with {
            $0.sandboxID = config.sandboxID; $0.instanceID = config.launch.instanceID; $0.exitCode = code
          }, metadata: metadata)
        return
      } catch {
        try? await Task.sleep(for: backoff)
        backoff = min(backoff * 2, .seconds(2))
      }
    }
  }

  static func forwardLines(_ fd: Int32, _ logs: LogPusher, level: String) async {
    var partial = Data()
    for await chunk in readChunks(fd) {
      partial.append(chunk)
      while let nl = partial.firstIndex(of: 0x0a) {
        let line = String(decoding: partial[partial.startIndex..<nl], as: UTF8.self)
        partial.removeSubrange(partial.startIndex...nl)
        logs.add(
          .with {
            $0.level = level; $0.target = "main"; $0.message = line; $0.source = "sandbox"; $0.eventTime = .init(date: Date())
          })
      }
    }
    if !partial.isEmpty {
      logs.add(
        .with {
          $0.level = level; $0.target = "main"; $0.message = String(decoding: partial, as: UTF8.self); $0.source = "sandbox"; $0.eventTime = .init(date: Date())
        })
    }
  }
}

/// What the supervisor sends before it exits on SIGTERM (sandbox stop or delete, the main process's end):
/// the proxy's pending reports, so that the last window's denials and credential substitutions reach the
/// audit trail instead of dying with the process.
enum StopFlush {
  private static let action = Mutex<(@Sendable () async -> Void)?>(nil)

  static func set(_ body: @escaping @Sendable () async -> Void) { action.withLock { $0 = body } }

  /// Runs the action (if any) and waits for it at most `timeout` (blocking: called from the signal handler's queue).
  static func run(timeout: Duration) {
    guard let body = action.withLock({ $0 }) else { return }
    let done = DispatchSemaphore(value: 0)
    Task {
      await body()
      done.signal()
    }
    let ms = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
    _ = done.wait(timeout: .now() + .milliseconds(ms))
  }
}
