import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// End-to-end tests of `openshell gateway …`, `status`, `doctor` against real daemons.
@Suite("CLI gateway lifecycle", .serialized, .timeLimit(.minutes(10)))
struct LifecycleTests {
  @Test("start → status → info → select → stop → start (state and CA kept) → --recreate (archive, verify, restore) → destroy")
  func fullLifecycle() async throws {
    let env = try CLIEnv("life")
    defer { env.cleanup() }
    let port = freePort()

    var r = try env.run(["gateway", "start", "--name", "life", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    #expect(r.out.contains("https://127.0.0.1:\(port)"))
    #expect(r.out.contains("Active gateway set to 'life'"))
    // Registry layout and modes.
    let reg = env.registryDir("life")
    #expect(fileMode(env.config.appendingPathComponent("openshell").path) == 0o700)
    #expect(fileMode(reg.path) == 0o700)
    #expect(fileMode(reg.appendingPathComponent("mtls/tls.key").path) == 0o600)
    for f in ["ca.crt", "tls.crt", "tls.key"] {
      #expect(FileManager.default.fileExists(atPath: reg.appendingPathComponent("mtls/\(f)").path))
    }
    let meta = try #require(env.metadata("life"))
    #expect(meta["gateway_endpoint"] as? String == "https://127.0.0.1:\(port)")
    #expect(meta["gateway_port"] as? Int == port)
    #expect(meta["is_remote"] as? Bool == false)
    #expect(meta["auth_mode"] as? String == "mtls")
    #expect(meta["type"] as? String == "local")
    #expect(try String(contentsOf: env.config.appendingPathComponent("openshell/active_gateway"), encoding: .utf8) == "life")
    let ca1 = try #require(meta["ca_fingerprint"] as? String)

    r = try env.run(["status"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("Connected") && r.out.contains("life") && r.out.contains("mtls"), "\(r)")

    // Starting it again: the same settings → "already running", exit 0; another port → refused, not ignored.
    r = try env.run(["gateway", "start", "--name", "life", "--port", "\(port)"])
    #expect(r.code == 0 && r.out.contains("already running"), "\(r)")
    r = try env.run(["gateway", "start", "--name", "life", "--port", "\(port + 1)"])
    #expect(r.code == 1, "\(r)")
    #expect(r.err.contains("port \(port) → \(port + 1)") && r.err.contains("openshell gateway stop --name life"), "\(r)")
    #expect(env.metadata("life")?["gateway_port"] as? Int == port)

    r = try env.run(["gateway", "info", "-o", "json"])
    #expect(r.code == 0, "\(r)")
    let info = env.json(r)
    #expect(info["state"] as? String == "running")
    #expect(info["ca_fingerprint"] as? String == ca1)
    #expect(info["port"] as? Int == port)
    #expect(info["data_dir"] as? String == env.dataDir("life").path)
    #expect(info["ca_expires"] != nil)

    r = try env.run(["gateway", "select"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("NAME") && r.out.contains("* life"), "\(r)")
    r = try env.run(["gateway", "select", "life"])
    #expect(r.code == 0 && r.out.contains("Active gateway set to 'life'"), "\(r)")
    r = try env.run(["gateway", "select", "nope"])
    #expect(r.code != 0 && r.err.contains("unknown gateway 'nope'"), "\(r)")

    // Already running → exit 0.
    r = try env.run(["gateway", "start", "--name", "life"])
    #expect(r.code == 0 && r.out.contains("already running"), "\(r)")

    try await env.createWorkspace("life", "keepme")
    #expect(try await env.workspaces("life").contains("keepme"))

    r = try env.run(["gateway", "stop", "--name", "life"])
    #expect(r.code == 0 && r.out.contains("stopped"), "\(r)")
    r = try env.run(["gateway", "info", "-o", "json"])
    #expect(env.json(r)["state"] as? String == "stopped", "\(r)")
    r = try env.run(["status"])
    #expect(r.code == 1, "\(r)")
    #expect(r.out.contains("Disconnected"), "\(r)")
    #expect(r.out.contains("connection refused") && !r.out.contains("errno"), "a short reason, not the transport dump: \(r)")
    r = try env.run(["sandbox", "list"])
    #expect(r.code == 1, "\(r)")
    #expect(
      r.err
        == "error: cannot reach gateway 'life' at https://127.0.0.1:\(port): connection refused; is it running? start it with: openshell gateway start --name life\n",
      "\(r)")

    // Resume: no --port, the stored one wins over the default.
    r = try env.run(["gateway", "start", "--name", "life"])
    try #require(r.code == 0, "\(r)")
    #expect(r.out.contains("Resuming") && r.out.contains("127.0.0.1:\(port)"), "\(r)")
    #expect(env.metadata("life")?["ca_fingerprint"] as? String == ca1)
    #expect(try await env.workspaces("life").contains("keepme"))

    // --recreate: archived, fresh CA, empty state.
    r = try env.run(["gateway", "start", "--name", "life", "--recreate"])
    try #require(r.code == 0, "\(r)")
    #expect(r.out.contains("openshell-replay audit"), "\(r)")
    let archives = try FileManager.default.contentsOfDirectory(atPath: env.archiveDir("life").path)
    try #require(archives.count == 1, "\(archives)")
    let archive = env.archiveDir("life").appendingPathComponent(archives[0])
    #expect(r.out.contains(archive.path))
    #expect(FileManager.default.fileExists(atPath: archive.appendingPathComponent("log/data.mdb").path))
    let ca2 = try #require(env.metadata("life")?["ca_fingerprint"] as? String)
    #expect(ca2 != ca1)
    #expect(try await env.workspaces("life").contains("keepme") == false)

    r = try env.replay(["verify", archive.appendingPathComponent("log").path])
    #expect(r.code == 0 && r.out.hasPrefix("OK"), "\(r)")
    r = try env.replay(["state", archive.appendingPathComponent("log").path])
    #expect(r.out.contains("keepme"), "\(r)")

    // Restore needs a stopped gateway.
    r = try env.replay(["restore", archive.path, "--gateway", "life"])
    #expect(r.code != 0 && r.err.contains("stop it first"), "\(r)")
    r = try env.run(["gateway", "stop"])
    #expect(r.code == 0, "\(r)")
    r = try env.replay(["restore", archive.path, "--gateway", "life"])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["gateway", "start", "--name", "life"])
    try #require(r.code == 0, "\(r)")
    #expect(env.metadata("life")?["ca_fingerprint"] as? String == ca2, "restore keeps the current PKI")
    #expect(try await env.workspaces("life").contains("keepme"))

    // The same through `gateway start --restore-from` with an exported archive file.
    r = try env.run(["gateway", "stop"])
    let exported = env.root.appendingPathComponent("old.archive").path
    r = try env.replay(["export", archive.appendingPathComponent("log").path, exported])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["gateway", "start", "--name", "life", "--restore-from", exported])
    #expect(r.code == 0, "\(r)")
    // The restore's last line says what the command then does (it starts the gateway itself).
    #expect((r.out + r.err).contains("gateway 'life' restored; starting it") && !(r.out + r.err).contains("start it with"), "\(r)")
    #expect(try await env.workspaces("life").contains("keepme"))

    // destroy: refused without --yes when stdin is not a terminal.
    r = try env.run(["gateway", "destroy", "--name", "life"])
    #expect(r.code != 0 && r.err.contains("--yes"), "\(r)")
    #expect(env.metadata("life") != nil)
    r = try env.run(["gateway", "destroy", "--name", "life", "--yes"])
    #expect(r.code == 0 && r.out.contains("destroyed"), "\(r)")
    #expect(env.metadata("life") == nil)
    #expect(!FileManager.default.fileExists(atPath: env.dataDir("life").path))
    let after = try FileManager.default.contentsOfDirectory(atPath: env.archiveDir("life").path)
    #expect(after.contains { $0.hasSuffix("-destroyed") }, "\(after)")
    r = try env.run(["status"])
    #expect(r.code != 0 && r.err.contains("no active gateway"), "\(r)")
  }

  @Test("the Python SDK connects through the registry after gateway start")
  func sdkConnects() async throws {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let python = repo.appendingPathComponent(".build-venv/bin/python").path
    guard FileManager.default.isExecutableFile(atPath: python) else {
      print("skipped: \(python) not found (run Tests/conformance/run.sh once to create the venv)")
      return
    }
    let env = try CLIEnv("sdk")
    defer { env.cleanup() }
    var r = try env.run(["gateway", "start", "--name", "sdk", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(
      ["-c", "import openshell; c = openshell.SandboxClient.from_active_cluster(timeout=10); print('HEALTH', c.health())"],
      binary: python)
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("HEALTH"), "\(r)")
  }

  @Test("-g, OPENSHELL_GATEWAY and --gateway-endpoint override the active gateway")
  func overrides() async throws {
    let env = try CLIEnv("ovr")
    defer { env.cleanup() }
    let pa = freePort()
    var r = try env.run(["gateway", "start", "--name", "alpha", "--port", "\(pa)"])
    try #require(r.code == 0, "\(r)")
    let pb = freePort()
    r = try env.run(["gateway", "start", "--name", "beta", "--port", "\(pb)", "--plaintext"])
    try #require(r.code == 0, "\(r)")
    #expect(env.metadata("beta")?["gateway_endpoint"] as? String == "http://127.0.0.1:\(pb)")
    #expect(!FileManager.default.fileExists(atPath: env.registryDir("beta").appendingPathComponent("mtls").path))

    r = try env.run(["status", "-o", "json"])
    #expect(env.json(r)["gateway"] as? String == "beta", "\(r)")
    r = try env.run(["status", "-g", "alpha", "-o", "json"])
    #expect(r.code == 0 && env.json(r)["gateway"] as? String == "alpha", "\(r)")
    r = try env.run(["-g", "alpha", "status", "-o", "json"])
    #expect(r.code == 0 && env.json(r)["gateway"] as? String == "alpha", "\(r)")
    r = try env.run(["status", "-o", "json"], env: ["OPENSHELL_GATEWAY": "alpha"])
    #expect(r.code == 0 && env.json(r)["gateway"] as? String == "alpha", "\(r)")
    r = try env.run(["status", "--gateway-endpoint", "https://127.0.0.1:\(pa)/", "-o", "json"])
    #expect(r.code == 0 && env.json(r)["gateway"] as? String == "alpha", "\(r)")
    r = try env.run(["gateway", "info", "-g", "alpha", "-o", "yaml"])
    #expect(r.code == 0 && r.out.contains("gateway: alpha"), "\(r)")
    r = try env.run(["status", "-g", "zzz"])
    #expect(r.code != 0 && r.err.contains("unknown gateway 'zzz'"), "\(r)")
    #expect(r.err.split(separator: "\n").count == 1, "\(r)")

    // gateway add: refuses an existing name, --force shows both CA fingerprints.
    r = try env.run(["gateway", "add", "https://127.0.0.1:\(pa)", "--name", "alpha-copy", "--local"])
    #expect(r.code == 0, "\(r)")
    let fp = env.metadata("alpha")?["ca_fingerprint"] as? String ?? "?"
    #expect(env.metadata("alpha-copy")?["ca_fingerprint"] as? String == fp)
    r = try env.run(["gateway", "add", "https://127.0.0.1:\(pa)", "--name", "alpha-copy", "--local"])
    #expect(r.code != 0 && r.err.contains("already exists"), "\(r)")
    r = try env.run(["gateway", "add", "https://127.0.0.1:\(pa)", "--name", "alpha-copy", "--local", "--force"])
    #expect(r.code == 0 && r.out.contains("old:") && r.out.contains("new:") && r.out.contains(fp), "\(r)")
    r = try env.run(["status", "-g", "alpha-copy"])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["gateway", "select"])
    #expect(r.out.contains("* alpha-copy") && r.out.contains("beta") && r.out.contains("plaintext"), "\(r)")
  }

  @Test("doctor logs, exec and check")
  func doctor() async throws {
    let env = try CLIEnv("doc")
    defer { env.cleanup() }
    // OpenShell's --gpu and registry credentials cannot be honoured here: refused, nothing written.
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "doc", "--port", "\(port)", "--gpu"])
    #expect(r.code == 1 && r.err == "error: --gpu is not supported yet: the local driver has no GPU passthrough\n", "\(r)")
    r = try env.run(["gateway", "start", "--name", "doc", "--port", "\(port)", "--registry-token", "s3cr3t-token-value"])
    #expect(r.code == 1 && r.err.hasPrefix("error: --registry-username/--registry-token are not supported yet"), "\(r)")
    #expect(!r.out.contains("s3cr3t-token-value") && !r.err.contains("s3cr3t-token-value"))
    #expect(env.metadata("doc") == nil)
    r = try env.run(["gateway", "start", "--name", "doc", "--port", "\(port)"], env: ["OPENSHELL_REGISTRY_TOKEN": "s3cr3t-token-value"])
    try #require(r.code == 0, "\(r)")
    #expect(r.err.contains("warning: OPENSHELL_REGISTRY_TOKEN is ignored"), "\(r)")
    #expect(!r.out.contains("s3cr3t-token-value") && !r.err.contains("s3cr3t-token-value"))

    r = try env.run(["doctor", "logs", "--lines", "3"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.split(separator: "\n").count <= 3, "\(r)")
    r = try env.run(["doctor", "logs"])
    #expect(r.out.contains("listening on 127.0.0.1"), "\(r)")

    r = try env.run(["doctor", "exec", "--", "sh", "-c", "pwd; echo gw=$OPENSHELL_GATEWAY; test -f \"$OPENSHELL_CA_CERT\" && echo ca-ok; exit 7"])
    #expect(r.code == 7, "\(r)")
    #expect(r.out.contains(env.dataDir("doc").path) && r.out.contains("gw=doc") && r.out.contains("ca-ok"), "\(r)")
    // A command ended by a signal exits 128 + N, as a shell reports it (here SIGTERM: 143).
    r = try env.run(["doctor", "exec", "--", "sh", "-c", "kill -TERM $$"])
    #expect(r.code == 143, "\(r)")
    r = try env.run(["doctor", "exec", "--", "/nonexistent-tool"])
    #expect(r.code == 127, "\(r)")
    // doctor is listed in the help (OpenShell hides it), under GATEWAY COMMANDS.
    r = try env.run(["--help"])
    #expect(r.out.contains("GATEWAY COMMANDS: gateway (gw), status, doctor (dr)."), "\(r)")

    r = try env.run(["doctor", "check"])
    #expect(r.code == 0 && r.out.contains("All checks passed."), "\(r)")

    // Nothing of the refused options reached the log.
    r = try env.run(["gateway", "stop"])
    r = try env.replay(["audit", env.dataDir("doc").appendingPathComponent("log").path, "-o", "json"])
    #expect(r.code == 0, "\(r)")
    #expect(!r.out.contains("s3cr3t-token-value"))
    r = try env.replay(["state", env.dataDir("doc").appendingPathComponent("log").path])
    #expect(!r.out.contains("__token__") && !r.out.contains("s3cr3t-token-value"), "\(r)")
    r = try env.run(["doctor", "check", "-o", "json"])
    #expect(r.code == 0 && env.json(r)["ok"] as? Bool == true, "\(r)")

    r = try env.run(["completions", "bash"])
    #expect(r.code == 0 && r.out.contains("openshell"), "\(r)")
    r = try env.run(["completions", "tcsh"])
    #expect(r.code != 0, "\(r)")
  }

  @Test("a taken port and a stale pid file are detected and named; nothing is half-written")
  func portTakenAndStalePID() async throws {
    let env = try CLIEnv("port")
    defer { env.cleanup() }
    let port = freePort()
    let fd = listenOn(port)
    var r = try env.run(["gateway", "start", "--name", "busy", "--port", "\(port)"])
    close(fd)
    #expect(r.code != 0, "\(r)")
    #expect(r.err.contains("port \(port)") && r.err.contains("pid \(getpid())"), "\(r)")
    #expect(r.err.split(separator: "\n").count == 1, "\(r)")
    #expect(env.metadata("busy") == nil)
    #expect(!FileManager.default.fileExists(atPath: env.dataDir("busy").path))
    #expect(!FileManager.default.fileExists(atPath: env.config.appendingPathComponent("openshell/active_gateway").path))

    // Stale pid file: names a live process that is not this gateway (ourselves).
    try FileManager.default.createDirectory(at: env.dataDir("busy"), withIntermediateDirectories: true)
    try "\(getpid())\n".write(to: env.dataDir("busy").appendingPathComponent("gateway.pid"), atomically: true, encoding: .utf8)
    r = try env.run(["gateway", "start", "--name", "busy", "--port", "\(port)"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("stale pid file"), "\(r)")
  }

  @Test("after --recreate a CLI holding the old bundle is told the CA changed, with the fix")
  func caChanged() async throws {
    var env = try CLIEnv("ca")
    defer { env.cleanup() }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "ca", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    // A second client configuration holding the current (soon old) bundle.
    let oldConfig = env.root.appendingPathComponent("old-config")
    try FileManager.default.copyItem(at: env.config, to: oldConfig)
    r = try env.run(["gateway", "start", "--name", "ca", "--recreate"])
    try #require(r.code == 0, "\(r)")

    env.config = oldConfig
    r = try env.run(["status"])
    #expect(r.code != 0, "\(r)")
    #expect(r.seconds < 1.0, "took \(r.seconds) s")
    #expect(r.err.contains("gateway 'ca'") && r.err.contains("CA changed"), "\(r)")
    #expect(r.err.contains("openshell gateway add https://127.0.0.1:\(port) --name ca --local --force"), "\(r)")
    #expect(r.err.split(separator: "\n").count == 1, "\(r)")
    // The suggested fix works.
    r = try env.run(["gateway", "add", "https://127.0.0.1:\(port)", "--name", "ca", "--local", "--force"])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["status"])
    #expect(r.code == 0, "\(r)")
  }
  @Test("the gateway daemon inherits no descriptor of the command that started it")
  func daemonInheritsNoDescriptors() async throws {
    let env = try CLIEnv("fds")
    defer {
      _ = try? env.run(["gateway", "stop", "--name", "fds"])
      env.cleanup()
    }
    // A descriptor without FD_CLOEXEC, as a shell or script would pass down (e.g. `exec 7>file`).
    let marker = env.root.appendingPathComponent("inherited-marker").path
    let fd = open(marker, O_WRONLY | O_CREAT, 0o600)
    try #require(fd >= 0)
    defer { close(fd) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    let args = [CLIEnv.openshell, "gateway", "start", "--name", "fds", "--port", "\(freePort())"]
    let argv = args.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    let envp = env.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { envp.forEach { free($0) } }
    var pid: pid_t = 0
    try #require(posix_spawn(&pid, CLIEnv.openshell, &actions, nil, argv, envp) == 0)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    try #require(status == 0, "gateway start exited with status \(status)")
    let pidText = try String(contentsOf: env.dataDir("fds").appendingPathComponent("gateway.pid"), encoding: .utf8)
    let daemon = try #require(Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)))
    let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon)/fd")
    let targets = fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(daemon)/fd/\($0)") }
    #expect(!targets.isEmpty)
    #expect(!targets.contains(marker), "the daemon holds \(marker): \(targets)")
  }
}
