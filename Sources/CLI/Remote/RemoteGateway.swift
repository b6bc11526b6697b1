import Foundation
import NIOCore

#if canImport(Glibc)
  import Glibc
#endif

/// `gateway start --remote user@host`: deploy-or-resume a gateway on another machine over SSH
/// (openshell-behavior.md §1A "Remote gateway"; our gateway needs no Docker: it runs as the SSH user).
///
/// Steps, each named in its error: resolve the host (`ssh -G`) → connect and authenticate once (a
/// master connection every later step shares) → check the host (architecture, glibc, bubblewrap) →
/// install our binaries when that version is missing (``RemoteInstall``) → run the installed
/// `openshell gateway start` there (port check, daemon, health wait, `--recreate` archiving: the local
/// lifecycle code, on the host) → fetch the client bundle (`gateway bundle`) → reach the gateway
/// directly at `https://<host>:<port>`, or through the SSH tunnel (`--tunnel`, or automatically when
/// the port cannot be reached from here) → register it (`is_remote`, `remote_host`, `resolved_host`,
/// `ssh`) and make it active. Nothing is registered before the gateway answered `/healthz` with the
/// fetched certificates; a gateway this command started is stopped again when a later step fails.
enum RemoteGateway {
  struct StartOptions {
    var name: String
    var destination: String?
    var sshKey: String?
    var port: Int?
    var gatewayHosts: [String]
    var recreate: Bool
    var yes: Bool
    var tunnel: Bool
    var timeout: Double
  }

  static func start(_ o: StartOptions) async throws {
    let registry = ClientRegistry.default
    let old = registry.metadata(o.name)
    if let old, old.ssh == nil {
      throw CLIError(
        "gateway '\(o.name)' is a \(old.type) registration (\(old.gateway_endpoint)), not a gateway deployed over SSH; pick another --name or remove it: openshell gateway destroy --name \(o.name)"
      )
    }
    guard let destination = o.destination ?? old?.ssh?.destination else { throw CLIError("--remote user@host is required") }
    if let s = old?.ssh, s.destination != destination {
      throw CLIError(
        "gateway '\(o.name)' is deployed on \(s.destination), not \(destination); pick another --name, or remove it first: openshell gateway destroy --name \(o.name)"
      )
    }
    let key = o.sshKey.map { URL(fileURLWithPath: $0).standardizedFileURL.path } ?? old?.ssh?.identity_file
    let env = ProcessInfo.processInfo.environment["OPENSHELL_SSH_CONFIG"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0).standardizedFileURL.path }
    let ssh = try SSHConnection(destination: destination, identityFile: key, configFile: env ?? old?.ssh?.config_file)
    let resolved = try ssh.resolve()
    print("• Connecting to \(destination) (\(resolved.user)@\(resolved.hostname):\(resolved.port))...")
    try ssh.open()
    defer { ssh.close() }

    let install = try RemoteInstall.local()
    let host = try HostFacts.probe(ssh, install: install)
    let dir = host.home + "/" + install.relativeDirectory
    let installedNow = host.installed != install.version
    if !installedNow {
      print("\(Style.check) openshell \(install.version) is installed on the host (\(dir))")
    } else {
      let staged = try install.stage(remoteLibrary: dir + "/lib")
      defer { try? FileManager.default.removeItem(atPath: staged) }
      print("• Installing openshell \(install.version) on the host into \(dir) (\(RemoteInstall.size(of: staged) >> 20) MiB over the SSH connection)...")
      try install.upload(staged, over: ssh, home: host.home)
      try install.verify(over: ssh, home: host.home)
      print("\(Style.check) Installed \(dir)")
    }
    if !host.hasBubblewrap {
      printErr("warning: bubblewrap is not installed on \(destination): sandboxes fail until it is (sudo apt-get install bubblewrap)")
    }
    let bin = dir + "/bin/openshell"

    // The gateway itself: the installed CLI's own start (port check, daemon, health, archive).
    // A gateway deployed with --tunnel stays on the host's loopback when resumed (as a local gateway keeps its settings).
    let tunnelWanted = o.tunnel || old?.ssh?.bind_address == "127.0.0.1"
    let bind = tunnelWanted ? "127.0.0.1" : "0.0.0.0"
    // Without --gateway-host, a resume keeps the host name the endpoint was registered with (OpenShell §1A).
    var userHosts = o.gatewayHosts
    if userHosts.isEmpty, let old, old.ssh?.tunnel == false, let t = try? Target(name: o.name, endpoint: old.gateway_endpoint, mtlsDir: nil),
      t.host != resolved.hostname, t.host != "127.0.0.1"
    {
      userHosts = [t.host]
    }
    var hosts = userHosts
    for h in [resolved.hostname, ssh.alias] where !hosts.contains(h) { hosts.append(h) }
    var args = [bin, "gateway", "start", "--name", o.name, "--bind", bind, "--timeout", String(Int(o.timeout))]
    if let p = o.port { args += ["--port", String(p)] }
    for h in hosts { args += ["--gateway-host", h] }
    if o.recreate { args.append("--recreate") }
    if o.yes { args.append("--yes") }
    print("• Starting gateway \(o.name) on \(destination)...")
    let started = try remote(ssh, step: "start gateway", args.map(shellQuote).joined(separator: " "), echo: true)
    let wasRunning = started.text.contains("is already running")
    if wasRunning && installedNow {
      print(
        "note: gateway \(o.name) was already running with an earlier openshell on the host; it uses \(install.version) after a restart: openshell gateway stop --name \(o.name) && openshell gateway start --name \(o.name)"
      )
    }

    do {
      let b = try remote(ssh, step: "fetch client bundle", [bin, "gateway", "bundle", "--name", o.name].map(shellQuote).joined(separator: " "))
      let bundle: RemoteBundle
      do { bundle = try JSONDecoder().decode(RemoteBundle.self, from: b.out) } catch {
        throw CLIError("step 'fetch client bundle' failed: the host's answer is not a bundle (\(error))")
      }
      let fingerprint = try CertInfo(pem: bundle.ca).fingerprint
      let probeDir = try privateTemporaryDirectory()
      defer { try? FileManager.default.removeItem(atPath: probeDir) }
      try writeFile(URL(fileURLWithPath: probeDir + "/ca.crt"), Data(bundle.ca.utf8), mode: 0o600)
      try writeFile(URL(fileURLWithPath: probeDir + "/tls.crt"), Data(bundle.cert.utf8), mode: 0o600)
      try writeFile(URL(fileURLWithPath: probeDir + "/tls.key"), Data(bundle.key.utf8), mode: 0o600)

      let advertised = userHosts.first ?? resolved.hostname
      var endpoint = "https://\(advertised.contains(":") ? "[\(advertised)]" : advertised):\(bundle.port)"
      var tunnelPort: Int?
      var useTunnel = tunnelWanted
      if !useTunnel {
        if let reason = await unhealthy(endpoint, name: o.name, mtls: probeDir) {
          print("note: \(endpoint) is not reachable from this machine (\(reason)); using an SSH tunnel instead (--tunnel asks for it)")
          useTunnel = true
        }
      }
      if useTunnel {
        var local = old?.ssh?.tunnel_local_port ?? GatewayTunnel.freeLocalPort()
        if GatewayTunnel.runningPID(o.name, local: local) == nil && GatewayTunnel.accepts(local) { local = GatewayTunnel.freeLocalPort() }
        print("• Opening the SSH tunnel 127.0.0.1:\(local) → \(destination) 127.0.0.1:\(bundle.port)...")
        try GatewayTunnel.start(name: o.name, ssh: ssh, local: local, remotePort: bundle.port)
        endpoint = "https://127.0.0.1:\(local)"
        tunnelPort = local
        if let reason = await unhealthy(endpoint, name: o.name, mtls: probeDir) {
          GatewayTunnel.stop(o.name, local: local)
          throw CLIError("step 'health check' failed through the SSH tunnel (\(endpoint)): \(reason); see: openshell doctor logs --name \(o.name)")
        }
      }

      let now = iso8601(Date())
      let meta = GatewayMetadata(
        name: o.name, gateway_endpoint: endpoint, is_remote: true, gateway_port: bundle.port, auth_mode: "mtls", type: "remote",
        remote_host: destination, resolved_host: resolved.hostname, data_dir: nil, ca_fingerprint: fingerprint,
        bind_address: bundle.bind, created_at: old?.created_at ?? now, updated_at: now,
        ssh: RemoteSSH(
          destination: destination, identity_file: key, config_file: ssh.configFile, openshell_path: bin, version: install.version,
          bind_address: bundle.bind, tunnel: useTunnel, tunnel_local_port: tunnelPort))
      try registry.write(meta, bundle: .init(ca: bundle.ca, cert: bundle.cert, key: bundle.key))
      if !useTunnel { GatewayTunnel.stop(o.name, local: old?.ssh?.tunnel_local_port) }
      try registry.setActive(o.name)
      print("\(Style.check) Gateway ready")
      print("  Name:     \(o.name)")
      print("  Endpoint: \(endpoint)\(useTunnel ? " (SSH tunnel to \(resolved.hostname):\(bundle.port))" : "")")
      print("  Host:     \(destination) (\(resolved.hostname)), data in \(bundle.data_dir)")
      print("  Auth:     mtls")
      print("  CA:       \(shortFingerprint(fingerprint))")
      print("\(Style.check) Active gateway set to '\(o.name)'")
    } catch {
      if !wasRunning {
        _ = try? ssh.run([bin, "gateway", "stop", "--name", o.name].map(shellQuote).joined(separator: " "))
        printErr("note: the gateway this command started on \(destination) was stopped again; nothing was registered")
      }
      throw error
    }
  }

  /// nil when `GET /healthz` answers 200 at `endpoint` with the bundle in `mtls`, else the reason.
  static func unhealthy(_ endpoint: String, name: String, mtls: String) async -> String? {
    do {
      let t = try Target(name: name, endpoint: endpoint, authMode: "mtls", mtlsDir: URL(fileURLWithPath: mtls))
      let r = try await HTTPProbe.get(t, path: "/healthz", timeout: .seconds(5))
      return r.status == 200 ? nil : "GET /healthz answered HTTP \(r.status)"
    } catch let e as CLIError {
      return e.message
    } catch {
      return oneLine("\(error)")
    }
  }

  /// Runs a command on the host; a failure names `step` and carries the host's `error:` line.
  /// - Parameter echo: print the host's stdout lines (indented) as they are the command's progress.
  @discardableResult
  static func remote(_ ssh: SSHConnection, step: String, _ command: String, echo: Bool = false) throws -> SSHConnection.Result {
    let r = try ssh.run(command)
    if echo {
      for line in r.text.split(separator: "\n") where !line.isEmpty { print("  \(Style.dim("│")) \(line)") }
    }
    guard r.code == 0 else {
      if r.code == 255 && !r.err.contains("error:") {
        throw CLIError(SSHConnection.describeFailure(r.err, status: r.code, destination: ssh.destination))
      }
      let line =
        r.err.split(separator: "\n").last { $0.hasPrefix("error:") }.map { String($0.dropFirst(6)).trimmingCharacters(in: .whitespaces) }
        ?? SSHConnection.lastLine(r.err) ?? "exit \(r.code)"
      var named = step
      if line.contains("did not become healthy") { named = "wait for health" }
      if line.contains("already in use") { named = "port check" }
      throw CLIError("step '\(named)' failed on \(ssh.destination): \(line)")
    }
    return r
  }

  static func privateTemporaryDirectory() throws -> String {
    var template = Array("/tmp/openshell-remote-XXXXXX".utf8CString)
    guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
      throw CLIError("cannot create a private temporary directory: \(errnoString())")
    }
    return dir
  }
}

/// What the host says about itself before anything is installed (one SSH command).
struct HostFacts {
  var home: String
  var arch: String
  var glibc: String
  var hasBubblewrap: Bool
  /// The `VERSION` of the install directory for this CLI's bundle, nil when absent.
  var installed: String?

  /// - Throws: `CLIError` (step 'check host') for another CPU architecture, an older glibc, or no home.
  static func probe(_ ssh: SSHConnection, install: RemoteInstall) throws -> HostFacts {
    let script = """
      printf 'arch=%s\\n' "$(uname -m)"; printf 'home=%s\\n' "$HOME"; \
      printf 'glibc=%s\\n' "$(getconf GNU_LIBC_VERSION 2>/dev/null | cut -d' ' -f2)"; \
      printf 'bwrap=%s\\n' "$(command -v bwrap 2>/dev/null)"; \
      if [ -f "$HOME/\(install.relativeDirectory)/VERSION" ]; then printf 'installed=%s\\n' "$(cat "$HOME/\(install.relativeDirectory)/VERSION")"; fi
      """
    let r = try RemoteGateway.remote(ssh, step: "check host", "sh -c \(shellQuote(script))")
    var v: [String: String] = [:]
    for line in r.text.split(separator: "\n") {
      if let eq = line.firstIndex(of: "=") { v[String(line[..<eq])] = String(line[line.index(after: eq)...]) }
    }
    guard let home = v["home"], home.hasPrefix("/") else {
      throw CLIError("step 'check host' failed on \(ssh.destination): the SSH user has no home directory")
    }
    let facts = HostFacts(home: home, arch: v["arch"] ?? "", glibc: v["glibc"] ?? "", hasBubblewrap: !(v["bwrap"] ?? "").isEmpty, installed: v["installed"])
    let localArch =
      (try? RemoteInstall.capture("uname", ["-m"])).map { String(decoding: $0.out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
    if !localArch.isEmpty, facts.arch != localArch {
      throw CLIError("step 'check host' failed on \(ssh.destination): the host is \(facts.arch), this machine's binaries are \(localArch)")
    }
    let localGlibc =
      (try? RemoteInstall.capture("getconf", ["GNU_LIBC_VERSION"])).map {
        String(decoding: $0.out, as: UTF8.self).split(separator: " ").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
      } ?? ""
    if !facts.glibc.isEmpty, !localGlibc.isEmpty, versionLess(facts.glibc, localGlibc) {
      throw CLIError(
        "step 'check host' failed on \(ssh.destination): its glibc \(facts.glibc) is older than \(localGlibc), which the binaries need (Debian 12 or newer)")
    }
    return facts
  }

  static func versionLess(_ a: String, _ b: String) -> Bool {
    let x = a.split(separator: ".").map { Int($0) ?? 0 }
    let y = b.split(separator: ".").map { Int($0) ?? 0 }
    for i in 0..<max(x.count, y.count) {
      let p = i < x.count ? x[i] : 0
      let q = i < y.count ? y[i] : 0
      if p != q { return p < q }
    }
    return false
  }
}
