import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Gateway
import OpenShellAPI
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// The latency half of `openshell-sandbox-bench --ssh`: one keystroke's round trip and one forwarded
/// HTTP request, each beside its plain-OpenSSH or direct peer.
enum LatencyBench {
  /// One byte into `ssh HOST cat` and the same byte back, `count` times (no terminal: the byte is
  /// what a keystroke costs on the wire). `argv` is the complete ssh command line.
  static func keystrokes(_ argv: [String], environment: [String: String], count: Int) throws -> [Double] {
    let p = try Spawner.spawn(argv[0], Array(argv.dropFirst()), environment: environment, stdin: .pipe, stdout: .pipe, stderr: .null)
    defer {
      close(p.stdin!)
      close(p.stdout!)
      _ = Spawner.waitBlocking(p.pid)
    }
    var out: [Double] = []
    var byte: UInt8 = 0x61
    // The first exchange includes the connection; it is not counted.
    for i in 0...count {
      let t = ContinuousClock.now
      guard write(p.stdin!, &byte, 1) == 1 else { throw RPCError(code: .internalError, message: "ssh stdin closed") }
      var back: UInt8 = 0
      guard read(p.stdout!, &back, 1) == 1, back == byte else { throw RPCError(code: .internalError, message: "ssh stdout closed") }
      if i > 0 { out.append((ContinuousClock.now - t).ms) }
    }
    return out
  }

  /// One byte through ExecSandboxInteractive (`cat` in the sandbox, no terminal) and back, `count` times.
  static func interactiveExec(_ c: Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>, sandbox: String, count: Int) async throws -> [Double] {
    let (inputs, sink) = AsyncStream<Openshell_V1_ExecSandboxInput>.makeStream()
    let (echoes, echoSink) = AsyncStream<Void>.makeStream()
    return try await c.execSandboxInteractive(
      request: StreamingClientRequest { writer in
        try await writer.write(
          .with {
            $0.start = .with {
              $0.sandbox = sandbox; $0.command = ["cat"]
            }
          })
        for await input in inputs { try await writer.write(input) }
      }
    ) { response in
      let reader = Task {
        for try await event in response.messages {
          if case .stdout(let d)? = event.payload { for _ in 0..<d.data.count { echoSink.yield() } }
        }
        echoSink.finish()
      }
      var iterator = echoes.makeAsyncIterator()
      var out: [Double] = []
      for i in 0...count {
        let t = ContinuousClock.now
        sink.yield(.with { $0.stdin = Data("a".utf8) })
        guard await iterator.next() != nil else { break }
        if i > 0 { out.append((ContinuousClock.now - t).ms) }
      }
      sink.finish()
      reader.cancel()
      return out
    }
  }

  /// Runs a command in the sandbox to its end (its output is dropped).
  static func exec(_ c: Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>, sandbox: String, _ command: [String]) async throws {
    try await c.execSandbox(
      .with {
        $0.sandbox = sandbox; $0.command = command; $0.workspaceScope = .with { $0.workspace = "default" }
      }
    ) { r in
      for try await _ in r.messages {}
    }
  }

  /// `curl` fetching `urls` one after another in one process; each request's total time (ms).
  static func curl(_ urls: [String], extra: [String]) throws -> [Double] {
    let text = try ProxyBench.hostOut(["/usr/bin/curl", "-s", "--noproxy", "*", "-o", "/dev/null", "-w", "%{time_total}\n"] + extra + urls)
    return text.split(separator: "\n").compactMap { Double($0).map { $0 * 1000 } }
  }

  /// A python http.server on the host's loopback (the direct peer of an exposed service), its pid.
  static func hostServer(port: Int, directory: String) throws -> pid_t {
    let p = try Spawner.spawn(
      "/usr/bin/python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", directory],
      environment: ProcessInfo.processInfo.environment, stdin: .null, stdout: .null, stderr: .null, newProcessGroup: true)
    return p.pid
  }

  /// Waits until `url` answers 200 (≤ 10 s).
  static func waitFor(_ url: String, extra: [String]) async throws {
    for _ in 0..<100 {
      if (try? ProxyBench.hostOut(["/usr/bin/curl", "-s", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}"] + extra + [url])) == "200" { return }
      try await Task.sleep(for: .milliseconds(100))
    }
    throw RPCError(code: .unavailable, message: "\(url) did not answer")
  }
}
