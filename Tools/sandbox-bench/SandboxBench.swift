import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Gateway
import OpenShellAPI

/// `openshell-sandbox-bench`: CreateSandbox → READY latency and the round trip of `exec true`, over N
/// sandboxes created one after another on an in-process gateway with the local driver (bubblewrap +
/// the `openshell-sandbox` supervisor next to this binary). Prints p50/p90/p99/max. With `--proxy`, the
/// policy proxy's added latency and throughput instead (``ProxyBench``); with `--ssh`, the SSH tunnel's
/// connect time and throughput beside plain OpenSSH (``SSHBench``); with `--launcher`, the cost of the
/// confinement launcher per process start next to setpriv and a direct start (``LauncherBench``).
@main
struct SandboxBench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "openshell-sandbox-bench")
  @Option(help: "Number of sandboxes.") var count = 50
  @Option(help: "exec round trips per sandbox.") var execs = 3
  @Option(help: "Data directory (default: a fresh temporary directory).") var dataDir: String?
  @Flag(help: "Measure the policy proxy instead (added latency of a small request, 100 MB throughput).") var proxy = false
  @Option(help: "Small requests per side for --proxy.") var requests = 1000
  @Option(help: "Rounds of direct, tunnel and L7 downloads for --proxy.") var proxyRounds = 5
  @Option(help: "100 MB downloads per mode and round for --proxy.") var proxyDownloads = 10
  @Flag(help: "Measure the SSH tunnel instead (connect p50/p99, throughput; beside plain ssh to a local sshd).") var ssh = false
  @Option(help: "ssh connects per side for --ssh.") var sshConnects = 50
  @Option(help: "MiB sent through ssh for --ssh.") var sshMegabytes = 200
  // The ProxyCommand mode of --ssh (this binary runs itself; not for direct use).
  @Option(help: .hidden) var sshProxyPort: Int?
  @Option(help: .hidden) var sshProxySandbox: String?
  @Option(help: .hidden) var sshProxyCert: String?
  @Option(help: .hidden) var sshProxyKey: String?
  @Option(help: .hidden) var sshProxyCa: String?

  @Flag(help: "Measure what confinement adds to one process start instead (launcher vs setpriv vs direct, --count starts each).") var launcher = false

  func validate() throws {
    guard count >= 0, execs >= 0, requests >= 0, proxyRounds >= 0, proxyDownloads >= 0, sshConnects >= 0, sshMegabytes >= 0 else {
      throw ValidationError("--count, --execs, --requests, --proxy-rounds, --proxy-downloads, --ssh-connects and --ssh-megabytes must not be negative")
    }
  }

  func run() async throws {
    if launcher { return try LauncherBench.run(count: count) }
    if let sshProxyPort, let sshProxySandbox, let sshProxyCert, let sshProxyKey, let sshProxyCa {
      try await SSHBench.proxy(port: sshProxyPort, sandboxID: sshProxySandbox, cert: sshProxyCert, key: sshProxyKey, ca: sshProxyCa)
    }
    let dir = dataDir ?? NSTemporaryDirectory() + "sandbox-bench-\(UUID().uuidString.prefix(8))"
    var config = GatewayConfiguration(dataDirectory: dir)
    config.port = 0
    config.handleSignals = false
    config.logOptions.durability = .sync
    final class Box: @unchecked Sendable { var value: (RunningGateway, Int)?; let lock = NSLock() }
    let box = Box()
    let server = Task { try await serve(config) { r, p in box.lock.withLock { box.value = (r, p) } } }
    var started: (RunningGateway, Int)?
    while started == nil {
      try await Task.sleep(for: .milliseconds(10))
      started = box.lock.withLock { box.value }
    }
    let (gateway, port) = started!
    let pki = gateway.pki!
    let security = HTTP2ClientTransport.Posix.TransportSecurity.mTLS(
      certificateChain: [.file(path: pki.clientCertificatePath, format: .pem)], privateKey: .file(path: pki.clientKeyPath, format: .pem)
    ) { $0.trustRoots = .certificates([.file(path: pki.caCertificatePath, format: .pem)]) }
    let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: security)
    // Ctrl-C: the same cleanup as `finish`, then exit.
    let temporary = dataDir == nil
    InterruptCleanup.install {
      PeerRelays.active?.stop()
      await gateway.driver?.stopAll()
      gateway.shutdown()
      if temporary { try? FileManager.default.removeItem(atPath: dir) }
    }
    /// Stops the sandboxes and the gateway, removes a temporary data dir, then rethrows a measurement's failure.
    @Sendable func finish(_ failure: Error?) async throws {
      await InterruptCleanup.awaitExitIfSignalled()
      await gateway.driver?.stopAll()
      gateway.shutdown()
      _ = try? await server.value
      if dataDir == nil { try? FileManager.default.removeItem(atPath: dir) }
      if let failure { throw failure }
    }
    if ssh {
      let (connects, megabytes) = (sshConnects, sshMegabytes)
      var failure: Error?
      do {
        try await withGRPCClient(transport: transport) { grpc in
          try await SSHBench.run(
            Openshell_V1_OpenShell.Client(wrapping: grpc), gateway: gateway, port: port, dataDir: dir, connects: connects, megabytes: megabytes)
        }
      } catch {
        failure = error
      }
      try await finish(failure)
      return
    }
    if proxy {
      let (requests, rounds, downloads) = (self.requests, proxyRounds, proxyDownloads)
      var failure: Error?
      do {
        try await withGRPCClient(transport: transport) { grpc in
          try await ProxyBench.run(Openshell_V1_OpenShell.Client(wrapping: grpc), requests: requests, rounds: rounds, downloads: downloads)
        }
      } catch {
        failure = error
      }
      try await finish(failure)
      return
    }
    // A failed measurement still stops its sandboxes and the gateway (their namespaces and processes would
    // otherwise outlive the benchmark).
    let measured: (ready: [Double], exec: [Double])
    do {
      measured = try await measureReady(transport)
    } catch {
      try await finish(error)
      return
    }
    print("sandboxes: \(count) (sequential), exec round trips: \(measured.exec.count)")
    print(Self.summary("CreateSandbox → READY", measured.ready))
    print(Self.summary("exec `true` round trip", measured.exec))
    try await finish(nil)
  }

  /// Creates `count` sandboxes one after another: the time from CreateSandbox to READY on the status stream,
  /// then `execs` round trips of `true` each; deletes them and waits until they are gone.
  /// - Throws: a failed RPC, a status stream that ends before READY, or an exec that does not exit 0.
  func measureReady(_ transport: HTTP2ClientTransport.Posix) async throws -> (ready: [Double], exec: [Double]) {
    let (count, execs) = (self.count, self.execs)
    return try await withGRPCClient(transport: transport) { grpc in
      let c = Openshell_V1_OpenShell.Client(wrapping: grpc)
      var ready: [Double] = []
      var exec: [Double] = []
      let ws = Openshell_Datamodel_V1_WorkspaceSelector.with { $0.workspace = "default" }
      for i in 0..<count {
        let name = "bench-\(i)"
        let t0 = ContinuousClock.now
        _ = try await c.createSandbox(
          .with {
            $0.name = name; $0.workspaceScope = ws
          })
        // The sandbox's status stream (WatchSandbox, follow_status): the first message is the current status,
        // then every change, so READY is seen when the gateway publishes it (a 5 ms GetSandbox poll added
        // 0–5 ms to every figure).
        let reached = try await c.watchSandbox(
          .with {
            $0.sandbox = name; $0.workspaceScope = ws; $0.followStatus = true
          }
        ) { r in
          for try await e in r.messages {
            if case .sandbox(let s)? = e.payload, s.status.phase == .ready { return true }
          }
          return false
        }
        guard reached else { throw LauncherBench.BenchError("\(name): the status stream ended before READY") }
        ready.append((ContinuousClock.now - t0).ms)
        for _ in 0..<execs {
          let t1 = ContinuousClock.now
          let code = try await c.execSandbox(
            .with {
              $0.sandbox = name; $0.command = ["true"]; $0.workspaceScope = ws
            }
          ) { r in
            var code: Int32 = -1
            for try await e in r.messages { if case .exit(let x)? = e.payload { code = x.exitCode } }
            return code
          }
          guard code == 0 else { throw LauncherBench.BenchError("\(name): exec `true` exited \(code)") }
          exec.append((ContinuousClock.now - t1).ms)
        }
        _ = try await c.deleteSandbox(
          .with {
            $0.name = name; $0.workspaceScope = ws
          })
      }
      // Wait for the deletions to finish.
      while try await !c.listSandboxes(.with { $0.workspaceScope = ws }).sandboxes.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
      return (ready, exec)
    }
  }

  static func summary(_ label: String, _ values: [Double]) -> String {
    guard !values.isEmpty else { return "\(label): none measured" }  // --execs 0
    let s = values.sorted()
    func p(_ q: Double) -> Double { s[min(s.count - 1, Int((Double(s.count) * q).rounded(.up)) - 1)] }
    return String(format: "%@: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms", label, p(0.5), p(0.9), p(0.99), s.last ?? 0)
  }
}

extension Duration {
  var ms: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15 }
}
