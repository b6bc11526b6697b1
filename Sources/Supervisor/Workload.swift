import Foundation
import OpenShellAPI
import SandboxConfinement
import SandboxProtocol
import SandboxSeccomp
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Starts workload processes (the main command and exec commands), confined.
///
/// Each workload runs in its own process group (so a timeout or a stop kills its whole tree) and is
/// started through the launcher (`openshell-sandbox-launch <plan options> -- CMD…`, `Launcher` in
/// SandboxConfinement), which applies the sandbox's ``ConfinementPlan`` (user `sandbox`, no
/// capabilities, no_new_privs, Landlock, seccomp) and then executes the command. Exec and the main
/// process get the same plan; there is no way to ask for another user.
///
/// Fail closed: without a plan (a launch description from an older gateway) nothing is started.
final class Workload: Sendable {
  let launch: SupervisorLaunch
  /// The plan as the launcher's options plus the compiled seccomp filter (`--seccomp-bpf HEX`),
  /// computed once; or why no workload can be started.
  let planArguments: Result<[String], CommandError>

  private let groups = Mutex<Set<pid_t>>([])

  init(launch: SupervisorLaunch) {
    self.launch = launch
    // Without root the workloads run as the supervisor's user: the filter keeps them from signalling it
    // (or bubblewrap's init, pid 1), which would end the sandbox's proxy (SeccompFilter.addProtection).
    planArguments = Self.launcherOptions(launch.confinement, protecting: launch.privateNetwork == true ? [getpid(), 1] : [])
  }

  /// The launcher's options for `plan`: the plan's, then the seccomp program libseccomp compiles here,
  /// once per supervisor (every launch installs the same program; the launcher does not link libseccomp).
  static func launcherOptions(_ plan: ConfinementPlan?, protecting: [Int32] = []) -> Result<[String], CommandError> {
    guard let plan else {
      return .failure(
        CommandError(
          description: "no confinement plan in the launch description; the command was not run (restart the sandbox)", exitCode: ConfinementPlan.failureExitCode
        ))
    }
    do {
      return .success(plan.launcherArguments + ["--seccomp-bpf", try SeccompFilter.compile(protecting: protecting).hex])
    } catch {
      return .failure(
        CommandError(description: "openshell-sandbox: confinement failed: \(error); the command was not run", exitCode: ConfinementPlan.failureExitCode))
    }
  }

  /// The environment of every workload process: defaults, then the spec's, then the request's.
  func environment(_ extra: [String: String]) -> [String: String] {
    var env = [
      "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": SandboxProtocol.workspace, "LANG": "C.UTF-8",
      "USER": "sandbox", "LOGNAME": "sandbox", "SHELL": "/bin/sh", "TERM": "dumb",
      SandboxProtocol.envSandboxName: ProcessInfo.processInfo.environment[SandboxProtocol.envSandboxName] ?? "",
      SandboxProtocol.envSandboxID: ProcessInfo.processInfo.environment[SandboxProtocol.envSandboxID] ?? "",
    ]
    env.merge(launch.environment) { _, b in b }
    if let proxy = launch.proxyAddress { env.merge(Self.proxyEnvironment(proxy)) { _, b in b } }
    if let tls = NetworkEnforcement.trustFiles { env.merge(Self.trustEnvironment(ca: tls.ca, bundle: tls.bundle)) { _, b in b } }
    env.merge(ProviderEnvironmentAgent.placeholders) { _, b in b }
    env.merge(extra) { _, b in b }
    return env
  }

  /// The proxy variables every workload gets, as OpenShell sets them (enforcement-and-ssh.md §1.4,
  /// row "Proxy"): `proxy` is `host:port` of the sandbox's policy proxy.
  static func proxyEnvironment(_ proxy: String) -> [String: String] {
    let url = "http://\(proxy)"
    let noProxy = "127.0.0.1,localhost,::1"
    return [
      "HTTP_PROXY": url, "HTTPS_PROXY": url, "ALL_PROXY": url, "http_proxy": url, "https_proxy": url, "all_proxy": url,
      "grpc_proxy": url, "NO_PROXY": noProxy, "no_proxy": noProxy, "NODE_USE_ENV_PROXY": "1",
    ]
  }

  /// The CA variables every workload gets once the sandbox CA exists, as OpenShell sets them
  /// (upstream `child_env.rs`): the CA alone for the additive `NODE_EXTRA_CA_CERTS` and `DENO_CERT`;
  /// the system roots plus the CA for `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE` and
  /// `GIT_SSL_CAINFO` (git built on GnuTLS ignores `SSL_CERT_FILE`).
  static func trustEnvironment(ca: String, bundle: String) -> [String: String] {
    [
      "NODE_EXTRA_CA_CERTS": ca, "DENO_CERT": ca, "SSL_CERT_FILE": bundle, "REQUESTS_CA_BUNDLE": bundle,
      "CURL_CA_BUNDLE": bundle, "GIT_SSL_CAINFO": bundle,
    ]
  }

  /// The launcher command line for `command` (the launcher enters the network namespace named in the
  /// plan first, then drops privileges and confines).
  /// - Throws: `CommandError` (126) when there is no confinement plan or no seccomp filter.
  func argv(_ command: [String], extraPlan: [String] = []) throws -> (String, [String]) {
    let options = try planArguments.get()
    return (SandboxProtocol.launcherPath, options + extraPlan + ["--"] + command)
  }

  /// Starts a workload process, by default with piped stdio in its own process group.
  /// - Parameters:
  ///   - extraPlan: launcher options added to the plan (e.g. `--rw /dev/pts` for a terminal).
  ///   - stdio: stdin, stdout, stderr (a terminal: `.terminal(path)`, `.fd(0)`, `.fd(0)` with `newSession`).
  ///   - newSession: setsid instead of a new process group (the group id is the pid either way).
  /// - Throws: `CommandError` (126) without a confinement plan, `SpawnError` when spawning fails. Neither the
  ///   working directory nor the command is looked at here: the launcher does both as the workload user
  ///   (`--chdir`, `CommandLookup`), since this process runs as root and would see what that user may not.
  func spawn(
    _ command: [String], environment: [String: String], workdir: String, extraPlan: [String] = [],
    stdio: (SpawnIO, SpawnIO, SpawnIO) = (.pipe, .pipe, .pipe), newSession: Bool = false
  ) throws -> SpawnedProcess {
    // The working directory is entered by the launcher after it has confined itself (as the workload user,
    // under Landlock), never with the supervisor's privileges; the launcher itself starts in `/`.
    let (path, args) = try argv(command, extraPlan: extraPlan + ["--chdir", workdir])
    let env = self.environment(environment)
    // The launcher runs as root with the supervisor's capabilities until it confines itself: it must
    // never see the workload's environment (LD_PRELOAD, LD_AUDIT, … would run agent code as root before
    // its main). It gets only the descriptor number; the environment travels on a pipe (descriptor 3)
    // and becomes the command's environment at execvp (`Launcher.adoptEnvironment`).
    let p = try Spawner.spawn(
      path, args, environment: [SandboxProtocol.launchEnvironmentFDVariable: "3"], stdin: stdio.0, stdout: stdio.1, stderr: stdio.2,
      workingDirectory: "/", newSession: newSession, newProcessGroup: !newSession, fd3Data: Self.encodeEnvironment(env))
    groups.withLock { _ = $0.insert(p.pid) }
    return p
  }

  /// Starts a service process of the sandbox (the SSH server) with the workloads' plan plus
  /// `extraPlan` launcher options (e.g. `--ro FILE`), piped stdio, in its own process group.
  /// - Throws: `CommandError` (126) without a plan, `SpawnError` when spawning fails.
  func spawnServer(_ command: [String], extraPlan: [String]) throws -> SpawnedProcess {
    let options: [String]
    switch planArguments {
    case .success(let o): options = o
    case .failure(let e):
      throw CommandError(
        description: e.description.replacingOccurrences(of: "the command was not run", with: "the server was not started"), exitCode: e.exitCode)
    }
    let p = try Spawner.spawn(
      SandboxProtocol.launcherPath, options + extraPlan + ["--"] + command,
      environment: [SandboxProtocol.launchEnvironmentFDVariable: "3"], stdin: .pipe, stdout: .pipe, stderr: .pipe,
      workingDirectory: SandboxProtocol.workspace, newProcessGroup: true, fd3Data: Self.encodeEnvironment(environment([:])))
    groups.withLock { _ = $0.insert(p.pid) }
    return p
  }

  /// `KEY=VALUE` entries, each followed by a NUL byte (the launcher's environment pipe format).
  static func encodeEnvironment(_ env: [String: String]) -> [UInt8] {
    var out: [UInt8] = []
    for (k, v) in env.sorted(by: { $0.key < $1.key }) where !k.isEmpty && !k.contains("=") && !k.utf8.contains(0) && !v.utf8.contains(0) {
      out += Array("\(k)=\(v)".utf8) + [0]
    }
    return out
  }

  /// Why no workload can start at all (no confinement plan, no seccomp filter), with its exit code.
  struct CommandError: Error, CustomStringConvertible {
    let description: String
    /// 126 when nothing may run; the launcher's own refusals (127, 126, 1) reach the caller as its exit code.
    let exitCode: Int32
  }

  func finished(_ pid: pid_t) { groups.withLock { _ = $0.remove(pid) } }

  /// Kills every workload process group (supervisor shutdown).
  func killAll() {
    for g in groups.withLock({ $0 }) { kill(-g, SIGKILL) }
  }

  /// An exec's working directory: the workspace when empty, a relative one taken from the workspace (as
  /// OpenShell's login shell, which starts there, resolves `cd <workdir>`), an absolute one as given.
  static func workdir(of r: Openshell_V1_ExecSandboxRequest) -> String {
    if r.workdir.isEmpty { return SandboxProtocol.workspace }
    return r.workdir.hasPrefix("/") ? r.workdir : SandboxProtocol.workspace + "/" + r.workdir
  }

  /// Runs one ExecSandbox request; emits stdout/stderr chunks as produced and finally `exit`.
  /// - Returns: the exit code (124 when `execution_timeout` expired).
  func exec(
    _ r: Openshell_V1_ExecSandboxRequest, cancelled: @escaping @Sendable () -> Bool = { false },
    emit: @escaping @Sendable (Openshell_V1_ExecSandboxEvent) -> Void
  ) async -> Int32 {
    let workdir = Self.workdir(of: r)
    let process: SpawnedProcess
    do {
      process = try spawn(r.command, environment: r.environment, workdir: workdir)
    } catch {
      let code = (error as? CommandError)?.exitCode ?? 127
      emit(.with { $0.stderr = .with { $0.data = Data("openshell-sandbox: \(error)\n".utf8) } })
      emit(.with { $0.exit = .with { $0.exitCode = code } })
      return code
    }
    defer { finished(process.pid) }
    writeAllAndClose(process.stdin!, r.stdin)
    let timedOut = SharedFlag()
    let timeout = r.hasExecutionTimeout && r.executionTimeout.seconds > 0 ? Duration.seconds(r.executionTimeout.seconds) : nil
    let pid = process.pid
    let killer = Task {
      let started = ContinuousClock.now
      while !Task.isCancelled {
        try await Task.sleep(for: .milliseconds(100))
        if let timeout, ContinuousClock.now - started >= timeout {
          timedOut.set()
          kill(-pid, SIGKILL)
          return
        }
        if cancelled() {
          kill(-pid, SIGKILL)
          return
        }
      }
    }
    let out = Task { for await chunk in readChunks(process.stdout!) { emit(.with { $0.stdout = .with { $0.data = chunk } }) } }
    let err = Task { for await chunk in readChunks(process.stderr!) { emit(.with { $0.stderr = .with { $0.data = chunk } }) } }
    let status = await Spawner.wait(pid)
    // Descendants that keep the pipes open get one second, then the group is killed.
    let drained = Task {
      await out.value
      await err.value
    }
    let grace = Task {
      try await Task.sleep(for: .seconds(1))
      kill(-pid, SIGKILL)
    }
    await drained.value
    grace.cancel()
    killer.cancel()
    let code = timedOut.isSet ? SandboxProtocol.timeoutExitCode : status
    emit(.with { $0.exit = .with { $0.exitCode = code } })
    return code
  }
}
