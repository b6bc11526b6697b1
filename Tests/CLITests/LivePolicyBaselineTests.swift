import Foundation
import SandboxProtocol
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// A fresh-clone user's sequence on a root gateway: a sandbox created without `--policy` (it starts with
/// the restrictive default), then `policy set` of a policy whose startup-only sections differ. The
/// gateway checks a live policy against what the sandbox started with and refuses the change itself
/// (no revision is recorded, so nothing failed can become the reference and lock later policies out);
/// `policy example` is settable as is; a network-only policy is loaded and enforced, attacked from inside
/// the sandbox with curl and python3. OpenShell: openshell-behavior.md §1E "Set", §7 "Live-update validation".
@Suite(.serialized, .timeLimit(.minutes(5)))
struct LivePolicyBaselineTests {
  @Test("static change refused at the gateway with no revision; policy example and a network-only policy load; the latter is enforced")
  func failedStaticChangeDoesNotLockOut() throws {
    let env = try CLIEnv("livepol")
    defer {
      _ = try? env.run(["sandbox", "delete", "np2"])
      _ = try? env.run(["gateway", "stop", "--name", "livepol"])
      env.cleanup()
    }
    let write = { (name: String, text: String) -> String in
      let path = env.root.appendingPathComponent(name).path
      try? text.write(toFile: path, atomically: true, encoding: .utf8)
      return path
    }
    let upDir = env.root.appendingPathComponent("up").path
    try FileManager.default.createDirectory(atPath: upDir, withIntermediateDirectories: true)
    let (upPID, up) = try UnprivilegedNetworkTests.upstream(upDir)
    defer {
      kill(upPID, SIGKILL)
      _ = Spawner.waitBlocking(upPID)
    }
    let other = freePort()

    var r = try env.run(["gateway", "start", "--name", "livepol", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "np2", "--", "true"])
    try #require(r.code == 0, "\(r)")

    // The user's file had the example's old filesystem section (no /app, /var/log): a static change.
    let narrowed = """
      version: 1
      filesystem_policy:
        include_workdir: true
        read_only: [/usr, /lib, /proc, /dev/urandom, /etc]
        read_write: [/sandbox, /tmp, /dev/null]
      landlock:
        compatibility: best_effort
      process:
        run_as_user: sandbox
        run_as_group: sandbox
      network_policies:
        local:
          endpoints:
            - host: 127.0.0.1
              port: \(up)
              allowed_ips: [127.0.0.1]

      """
    r = try env.run(["policy", "set", "np2", "--policy", write("narrow.yaml", narrowed), "--wait", "--timeout", "20"])
    #expect(r.code != 0, "\(r)")
    #expect(r.err.contains("filesystem read_only path '/app' cannot be removed on a live sandbox"), "\(r)")
    #expect(r.err.contains("filesystem read_only path '/var/log' cannot be removed on a live sandbox"), "\(r)")
    #expect(!(r.out + r.err).contains("submitted"), "nothing was submitted: \(r)")
    // No revision was recorded.
    r = try env.run(["policy", "get", "np2"])
    #expect(r.code != 0 && r.err.contains("no policy revision found"), "\(r)")

    // `policy example` is settable as is on a sandbox created without --policy.
    r = try env.run(["policy", "example"])
    try #require(r.code == 0, "\(r)")
    let example = r.out
    r = try env.run(["policy", "set", "np2", "--policy", write("example.yaml", example), "--wait", "--timeout", "20"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("Policy version 1 submitted") && r.out.contains("loaded (active version: 1)"), "\(r)")

    // A network-only policy (no startup-only sections: the sandbox keeps the default's) loads.
    let networkOnly = """
      version: 1
      network_policies:
        local:
          endpoints:
            - host: 127.0.0.1
              port: \(up)
              allowed_ips: [127.0.0.1]
          binaries:
            - path: /usr/bin/curl
            - path: /usr/bin/python3*

      """
    r = try env.run(["policy", "set", "np2", "--policy", write("net.yaml", networkOnly), "--wait", "--timeout", "20"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("Policy version 2 submitted") && r.out.contains("loaded (active version: 2)"), "\(r)")
    r = try env.run(["policy", "list", "np2"])
    #expect(r.code == 0 && !r.out.contains("failed"), "\(r)")

    // Enforced, seen from inside the sandbox: the allowed loopback port works for curl and python3,
    // another port is denied with the proxy's reason.
    func exec(_ command: [String]) throws -> CLIEnv.Result {
      try env.run(["sandbox", "exec", "np2", "--", "/usr/bin/env", "NO_PROXY=", "no_proxy="] + command)
    }
    r = try exec(["/usr/bin/curl", "-sS", "--max-time", "10", "http://127.0.0.1:\(up)/hello.txt"])
    #expect(r.code == 0 && r.out == "hello-unprivileged\n", "\(r)")
    let fetch = { (port: Int) in
      "import urllib.request\ntry:\n  print('ALLOWED', urllib.request.urlopen('http://127.0.0.1:\(port)/hello.txt', timeout=10).read().decode().strip())\nexcept Exception as e:\n  print('DENIED', getattr(e, 'code', e), e.read().decode() if hasattr(e, 'read') else '')"
    }
    r = try exec(["/usr/bin/python3", "-c", fetch(up)])
    #expect(r.out.hasPrefix("ALLOWED hello-unprivileged"), "\(r)")
    r = try exec(["/usr/bin/curl", "-sS", "--max-time", "10", "-w", "%{http_code}", "http://127.0.0.1:\(other)/hello.txt"])
    #expect(r.out.hasSuffix("403") && r.out.contains("no network policy"), "\(r)")
    r = try exec(["/usr/bin/python3", "-c", fetch(other)])
    #expect(r.out.hasPrefix("DENIED 403"), "\(r)")

    // A revision the supervisor rejects (L7: a host matching everything) leaves v2 in force, and a
    // stop + start neither reports it loaded nor starts without v2: the gateway offers the newest
    // revision that did not fail.
    let broken = """
      version: 1
      network_policies:
        api:
          endpoints:
            - host: "*"
              port: 443
              access: full
              protocol: rest

      """
    r = try env.run(["policy", "set", "np2", "--policy", write("broken.yaml", broken), "--wait", "--timeout", "20"])
    #expect(r.code == 1 && r.err.contains("Policy version 3 failed to load") && r.err.contains("(active version: 2)"), "\(r)")
    r = try env.run(["sandbox", "stop", "np2"])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "start", "np2"])
    #expect(r.code == 0, "\(r)")
    var after = try exec(["/usr/bin/curl", "-sS", "--max-time", "10", "http://127.0.0.1:\(up)/hello.txt"])
    for _ in 0..<40 where after.out != "hello-unprivileged\n" {
      usleep(250_000)
      after = try exec(["/usr/bin/curl", "-sS", "--max-time", "10", "http://127.0.0.1:\(up)/hello.txt"])
    }
    #expect(after.code == 0 && after.out == "hello-unprivileged\n", "v2 is enforced after the restart: \(after)")
    r = try exec(["/usr/bin/curl", "-sS", "--max-time", "10", "-w", "%{http_code}", "http://127.0.0.1:\(other)/hello.txt"])
    #expect(r.out.hasSuffix("403") && r.out.contains("no network policy"), "\(r)")
    r = try env.run(["policy", "get", "np2", "--rev", "3"])
    #expect(r.code == 0 && r.out.contains("failed") && !r.out.contains("loaded"), "\(r)")
    r = try env.run(["policy", "get", "np2", "--rev", "2"])
    #expect(r.code == 0 && r.out.contains("loaded"), "\(r)")

    // Set while stopped (new filesystem section, so it takes effect at the next start) but rejected by
    // the supervisor after the start: the sandbox starts with v2 instead, v2 stays enforced, and live
    // policies keep being checked against v2's sections (a network-only policy loads).
    r = try env.run(["sandbox", "stop", "np2"])
    #expect(r.code == 0, "\(r)")
    let stoppedBroken = """
      version: 1
      filesystem_policy:
        include_workdir: true
        read_only: [/usr, /lib, /proc, /dev/urandom, /app, /etc, /var/log, /opt]
        read_write: [/sandbox, /tmp, /dev/null]

      """ + broken.dropFirst("version: 1\n".count)
    r = try env.run(["policy", "set", "np2", "--policy", write("stopped.yaml", stoppedBroken)])
    #expect(r.code == 0 && r.out.contains("Policy version 4 submitted"), "\(r)")
    r = try env.run(["sandbox", "start", "np2"])
    #expect(r.code == 0, "\(r)")
    after = try exec(["/usr/bin/curl", "-sS", "--max-time", "10", "http://127.0.0.1:\(up)/hello.txt"])
    for _ in 0..<40 where after.out != "hello-unprivileged\n" {
      usleep(250_000)
      after = try exec(["/usr/bin/curl", "-sS", "--max-time", "10", "http://127.0.0.1:\(up)/hello.txt"])
    }
    #expect(after.code == 0 && after.out == "hello-unprivileged\n", "v2 is enforced: \(after)")
    r = try env.run(["policy", "get", "np2", "--rev", "4"])
    #expect(r.code == 0 && r.out.contains("failed") && r.out.contains("matches all hosts"), "\(r)")
    r = try env.run(["policy", "get", "np2", "--rev", "2"])
    #expect(r.code == 0 && r.out.contains("loaded"), "\(r)")
    r = try env.run(["policy", "set", "np2", "--policy", write("net.yaml", networkOnly), "--wait", "--timeout", "20"])
    #expect(r.code == 0 && r.out.contains("Policy version 5 submitted") && r.out.contains("loaded (active version: 5)"), "\(r)")
  }
}
