import Foundation
import Testing

/// `openshell policy set --wait` against a real gateway and a real sandbox supervisor:
/// exit 0 when loaded, 1 with the supervisor's message when it fails to load, 124 on timeout.
@Suite struct PolicyWaitTests {
  static let base = """
    version: 1
    filesystem_policy:
      include_workdir: true
      read_only: [/usr, /lib, /proc, /dev/urandom, /app, /etc, /var/log]
      read_write: [/sandbox, /tmp, /dev/null]
    landlock:
      compatibility: best_effort
    process:
      run_as_user: sandbox
      run_as_group: sandbox

    """

  static func network(host: String) -> String {
    base + """
      network_policies:
        api:
          name: api
          endpoints:
            - host: "\(host)"
              port: 443
              access: full
              protocol: rest

      """
  }

  @Test func waitExitCodes() throws {
    let env = try CLIEnv("polwait")
    defer {
      _ = try? env.run(["gateway", "stop", "--name", "polwait"])
      env.cleanup()
    }
    let write = { (name: String, text: String) -> String in
      let path = env.root.appendingPathComponent(name).path
      try? text.write(toFile: path, atomically: true, encoding: .utf8)
      return path
    }
    let basePath = write("base.yaml", Self.base)
    var r = try env.run(["gateway", "start", "--name", "polwait", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "pbox", "--policy", basePath])
    try #require(r.code == 0, "\(r)")

    r = try env.run(["policy", "set", "pbox", "--policy", write("ok.yaml", Self.network(host: "api.github.com")), "--wait", "--timeout", "20"])
    #expect(r.code == 0, "loaded: \(r)")

    r = try env.run(["policy", "set", "pbox", "--policy", write("bad.yaml", Self.network(host: "*")), "--wait", "--timeout", "20"])
    #expect(r.code == 1, "failed: \(r)")
    #expect((r.out + r.err).contains("matches all hosts"), "the supervisor's message is shown: \(r)")

    // The last good revision stays active.
    r = try env.run(["policy", "get", "pbox"])
    #expect(r.code == 0, "\(r)")

    // A stopped sandbox never acknowledges: the wait times out with 124.
    r = try env.run(["sandbox", "stop", "pbox"])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["policy", "set", "pbox", "--policy", write("ok2.yaml", Self.network(host: "pypi.org")), "--wait", "--timeout", "2"])
    #expect(r.code == 124, "timeout: \(r)")
    r = try env.run(["sandbox", "delete", "pbox"])
    #expect(r.code == 0, "\(r)")
  }
}
