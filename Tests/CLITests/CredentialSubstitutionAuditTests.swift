import Foundation
import SandboxProtocol
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Issue 12, credential disclosure by the proxy: every placeholder substitution the sandbox's policy proxy
/// makes reaches the audit trail as `audit.credentials_substituted` (key, provider, destination, binary,
/// count; never the value), aggregated by the supervisor (one report per 10 s window, one at stop). Seen
/// from a real sandbox created through a real gateway daemon: curl inside it sends the placeholder.
@Suite("Credential substitution audit", .serialized, .timeLimit(.minutes(10)))
struct CredentialSubstitutionAuditTests {
  /// Two python3 HTTP servers on the host's 127.0.0.1 (the inspected and the `tls: skip` endpoint) that
  /// answer 200 and append every request as a JSON line (`port`, `path`, `headers`) to `dir/requests.jsonl`.
  static func upstreams(_ dir: String) throws -> (pid: Int32, inspected: Int, skipped: Int) {
    let script = """
      import http.server, json, os, sys, threading
      log = open(os.path.join(sys.argv[1], 'requests.jsonl'), 'a', buffering=1)
      lock = threading.Lock()
      class H(http.server.BaseHTTPRequestHandler):
          def do_GET(self):
              with lock:
                  log.write(json.dumps({'port': self.server.server_address[1], 'path': self.path, 'headers': dict(self.headers)}) + '\\n')
              self.send_response(200); self.send_header('Content-Length', '3'); self.end_headers(); self.wfile.write(b'ok\\n')
          def log_message(self, *a): pass
      servers = [http.server.ThreadingHTTPServer(('127.0.0.1', 0), H) for _ in range(2)]
      for s in servers[1:]: threading.Thread(target=s.serve_forever, daemon=True).start()
      ports = ' '.join(str(s.server_address[1]) for s in servers)
      open(sys.argv[2] + '.tmp', 'w').write(ports); os.rename(sys.argv[2] + '.tmp', sys.argv[2])
      servers[0].serve_forever()
      """
    let p = try Spawner.spawn("/usr/bin/python3", ["-c", script, dir, dir + "/ports"], environment: ["PATH": "/usr/bin:/bin"])
    for _ in 0..<500 {
      if let t = try? String(contentsOfFile: dir + "/ports", encoding: .utf8) {
        let ports = t.split(separator: " ").compactMap { Int($0) }
        if ports.count == 2 { return (p.pid, ports[0], ports[1]) }
      }
      usleep(10_000)
    }
    kill(p.pid, SIGKILL)
    _ = Spawner.waitBlocking(p.pid)
    throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "upstreams did not start"])
  }

  /// The requests the upstreams received: (port, path, headers).
  static func received(_ dir: String) -> [(port: Int, path: String, headers: [String: String])] {
    let text = (try? String(contentsOfFile: dir + "/requests.jsonl", encoding: .utf8)) ?? ""
    return text.split(separator: "\n").compactMap { line in
      guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
      return (o["port"] as? Int ?? 0, o["path"] as? String ?? "", o["headers"] as? [String: String] ?? [:])
    }
  }

  /// The `audit.credentials_substituted` records of `openshell audit ARGS -o jsonl`.
  static func substitutions(_ env: CLIEnv, _ args: [String]) throws -> [[String: String]] {
    let r = try env.run(["audit", "--type", "audit.credentials_substituted", "-o", "jsonl"] + args)
    #expect(r.code == 0, "\(r)")
    return try AuditCLITests.records(r.out)
  }

  /// Polls `openshell audit` until `count` substitution records exist (the supervisor reports 10 s after a
  /// window opens), at most `timeout`.
  static func waitForSubstitutions(_ env: CLIEnv, count: Int, timeout: Duration = .seconds(25)) throws -> [[String: String]] {
    let deadline = ContinuousClock.now + timeout
    var records: [[String: String]] = []
    while ContinuousClock.now < deadline {
      records = try substitutions(env, ["--sandbox", "box"])
      if records.count >= count { return records }
      usleep(250_000)
    }
    return records
  }

  @Test("placeholders substituted by the proxy are audited with key, provider, destination, binary and count; never the value")
  func substitutionsAreAudited() throws {
    let env = try CLIEnv("credsub")
    defer { env.cleanup() }
    let upDir = env.root.appendingPathComponent("up").path
    try FileManager.default.createDirectory(atPath: upDir, withIntermediateDirectories: true)
    let up = try Self.upstreams(upDir)
    defer {
      kill(up.pid, SIGKILL)
      _ = Spawner.waitBlocking(up.pid)
    }
    let canary = "sk-canary-\(UUID().uuidString)"
    var r = try env.run(["gateway", "start", "--name", "cs", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    defer { _ = try? env.run(["gateway", "destroy", "--name", "cs", "--yes"]) }
    r = try env.run(["provider", "create", "--name", "svc", "--type", "generic", "--credential", "SVC_TOKEN=\(canary)"])
    try #require(r.code == 0, "\(r)")
    let policy = env.root.appendingPathComponent("policy.yaml").path
    try """
    version: 1
    filesystem_policy:
      include_workdir: true
      read_only: [/usr, /lib, /etc, /proc]
      read_write: [/sandbox, /tmp]
    network_policies:
      api:
        endpoints:
          - host: 127.0.0.1
            port: \(up.inspected)
            protocol: rest
            access: full
            allowed_ips: [127.0.0.1]
        binaries:
          - path: /usr/bin/curl
      raw:
        endpoints:
          - host: 127.0.0.1
            port: \(up.skipped)
            protocol: rest
            tls: skip
            access: read-only
            allowed_ips: [127.0.0.1]
        binaries:
          - path: /usr/bin/curl

    """.write(toFile: policy, atomically: true, encoding: .utf8)
    r = try env.run(["sandbox", "create", "box", "--provider", "svc", "--policy", policy])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["policy", "set", "box", "--policy", policy, "--wait"])
    try #require(r.code == 0, "\(r)")

    /// curl inside the sandbox, through the proxy (NO_PROXY cleared: the endpoints are on 127.0.0.1),
    /// with the placeholder the sandbox holds in a header; `n` requests to `port`.
    func curl(_ port: Int, _ path: String, times n: Int) throws -> CLIEnv.Result {
      try env.run([
        "sandbox", "exec", "box", "--", "/usr/bin/env", "NO_PROXY=", "no_proxy=", "/bin/sh", "-c",
        "for i in $(seq \(n)); do /usr/bin/curl -sS --max-time 10 -H \"X-Api-Key: $SVC_TOKEN\" http://127.0.0.1:\(port)\(path) || exit 1; done",
      ])
    }
    r = try env.run(["sandbox", "exec", "box", "--", "/usr/bin/printenv", "SVC_TOKEN"])
    #expect(r.out == "openshell:resolve:env:SVC_TOKEN\n", "the sandbox holds the placeholder: \(r)")
    // Uninspected first: the placeholder stays a placeholder, so there is nothing to audit.
    r = try curl(up.skipped, "/raw", times: 1)
    #expect(r.code == 0 && r.out == "ok\n", "\(r)")
    r = try curl(up.inspected, "/sub", times: 5)
    #expect(r.code == 0 && r.out == String(repeating: "ok\n", count: 5), "\(r)")

    // What the upstreams received: the real value where the proxy inspected, the placeholder where it did not.
    let requests = Self.received(upDir)
    let inspected = requests.filter { $0.port == up.inspected }
    #expect(inspected.count == 5 && inspected.allSatisfy { $0.headers["X-Api-Key"] == canary }, "\(requests.map { ($0.port, $0.path) })")
    let raw = requests.filter { $0.port == up.skipped }
    #expect(raw.count == 1 && raw.first?.headers["X-Api-Key"] == "openshell:resolve:env:SVC_TOKEN", "\(raw.map(\.headers))")

    // One event for the burst: the key, its provider, the destination, the binary, the count; not the
    // uninspected request.
    var records = try Self.waitForSubstitutions(env, count: 1)
    #expect(records.count == 1, "\(records)")
    let summary = records.first?["summary"] ?? ""
    #expect(summary == "credential placeholders substituted in 5 request(s): SVC_TOKEN of svc → 127.0.0.1:\(up.inspected) by /usr/bin/curl ×5", "\(records)")
    #expect(!summary.contains("\(up.skipped)"), "\(summary)")
    #expect(records.first?["actor"]?.hasPrefix("sandbox:") == true, "\(records)")
    // --provider finds it (the provider's trail includes every use of its keys), another provider does not.
    #expect(try Self.substitutions(env, ["--provider", "svc"]).count == 1)
    r = try env.run(["provider", "create", "--name", "other", "--type", "generic", "--credential", "T=x"])
    #expect(try Self.substitutions(env, ["--provider", "other"]).isEmpty)
    // OCSF: Network Activity (4001) Traffic, Modified/Allowed, with the key name; valid against the schema.
    r = try env.run(["audit", "--sandbox", "box", "-o", "ocsf"])
    let ocsf = r.out.split(separator: "\n").filter { $0.contains("\"event_code\":\"audit.credentials_substituted\"") }
    #expect(ocsf.count == 1, "\(r)")
    if let line = ocsf.first {
      let e = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
      #expect(e["class_uid"] as? Int == 4001 && e["activity_id"] as? Int == 6 && e["type_uid"] as? Int == 400106, "\(line)")
      #expect(e["action_id"] as? Int == 4 && e["disposition_id"] as? Int == 1 && e["count"] as? Int == 5, "\(line)")
      #expect((e["dst_endpoint"] as? [String: Any])?["port"] as? Int == up.inspected, "\(line)")
      #expect(e["app_name"] as? String == "/usr/bin/curl", "\(line)")
      #expect((e["unmapped"] as? [String: Any])?["credential_key"] as? String == "SVC_TOKEN", "\(line)")
      #expect((e["unmapped"] as? [String: Any])?["provider"] as? String == "svc", "\(line)")
    }
    try AuditCLITests().expectValidOCSF(env, r.out, "substitutions")

    // Stop flushes what is pending: two more requests, then the sandbox stops at once (before a 10 s window
    // ends); their report is recorded before the supervisor exits.
    r = try curl(up.inspected, "/late", times: 2)
    #expect(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "stop", "box"])
    #expect(r.code == 0, "\(r)")
    records = try Self.substitutions(env, ["--sandbox", "box"])
    #expect(records.count == 2, "\(records)")
    #expect(records.last?["summary"]?.hasSuffix("SVC_TOKEN of svc → 127.0.0.1:\(up.inspected) by /usr/bin/curl ×2") == true, "\(records)")

    // The secret is in no audit output format, nor in the gateway's or the sandbox's log.
    for format in ["table", "json", "jsonl", "ocsf"] {
      r = try env.run(["audit", "-o", format])
      #expect(r.code == 0 && r.out.contains("SVC_TOKEN"), "\(format): \(r)")
      #expect(!(r.out + r.err).contains(canary), "\(format) holds the secret")
    }
    r = try env.run(["logs", "box", "-n", "1000"])
    #expect(!(r.out + r.err).contains(canary), "sandbox log holds the secret")
    let gatewayLog = (try? String(contentsOf: env.dataDir("cs").appendingPathComponent("gateway.log"), encoding: .utf8)) ?? ""
    #expect(!gatewayLog.isEmpty && !gatewayLog.contains(canary), "gateway log holds the secret")

    // openshell-replay reads the same records from the data directory.
    r = try env.run(["gateway", "stop", "--name", "cs"])
    let log = env.dataDir("cs").appendingPathComponent("log").path
    r = try env.replay(["audit", log, "--sandbox", "box", "--type", "audit.credentials_substituted", "-o", "jsonl"])
    let replayed = try AuditCLITests.records(r.out)
    #expect(replayed.map { $0["summary"] ?? "" } == records.map { $0["summary"] ?? "" }, "\(r)")
    for format in ["table", "json", "jsonl", "ocsf"] {
      r = try env.replay(["audit", log, "-o", format])
      #expect(r.code == 0 && !(r.out + r.err).contains(canary), "replay \(format): \(r.code)")
    }
  }
}
