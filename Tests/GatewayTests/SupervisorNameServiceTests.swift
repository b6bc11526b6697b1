import Foundation
import GRPCCore
import OpenShellAPI
import SandboxProtocol
import Testing

@testable import Gateway

#if canImport(Glibc)
  import Glibc
#endif

/// The supervisor is a static executable; static glibc still `dlopen`s every NSS service a host's
/// `nsswitch.conf` names beyond its built-in `files` and `dns`, which maps the host's shared libc (and the
/// modules' dependencies) into the static process: a second libc beside the linked one. The supervisor pins
/// hosts to `files dns` and passwd/group to `files` (CNameService). Here a real gateway (`openshell gateway
/// serve`) runs in a private mount namespace whose `/etc/nsswitch.conf` names modules that exist on Debian
/// (hesiod, systemd); its sandbox's proxy resolves `localhost` for curl, and the supervisor maps no shared
/// object at all.
@Suite(
  "Supervisor name services", .serialized, .timeLimit(.minutes(3)),
  .enabled(
    if: geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/bwrap")
      && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"), "needs root, bubblewrap and unshare"))
struct SupervisorNameServiceTests {
  @Test("with an nsswitch.conf naming other modules, the supervisor resolves from files and maps no shared object")
  func pinnedNameServices() async throws {
    let dir = try GatewayTestSupport.temporaryDirectory("nss")
    let nsswitch = dir + "-nsswitch.conf"
    try """
    passwd: hesiod systemd files
    group: hesiod systemd files
    shadow: files
    hosts: hesiod systemd files dns
    networks: files
    protocols: files
    services: files

    """.write(toFile: nsswitch, atomically: true, encoding: .utf8)
    let up = try Upstream.start("http")
    defer { up.stop() }
    let port = freeLoopbackPort()
    let log = dir + "-serve.log"
    // The gateway's own mount namespace, with the file bound over the host's; its sandboxes' /etc views are
    // made from what it sees.
    let gateway = try Spawner.spawn(
      "/usr/bin/unshare",
      [
        "-m", "--propagation", "private", "/bin/sh", "-c", "mount --bind \"$0\" /etc/nsswitch.conf && exec \"$@\"", nsswitch,
        SandboxSpawnCrashTests.openshell, "gateway", "serve", "--data-dir", dir, "--port", "\(port)",
      ],
      environment: ProcessInfo.processInfo.environment, stdout: .appendFile(log), stderr: .appendFile(log))
    defer {
      kill(gateway.pid, SIGTERM)
      for _ in 0..<50 where Spawner.poll(gateway.pid) == nil { usleep(20_000) }
      if Spawner.poll(gateway.pid) == nil {
        kill(gateway.pid, SIGKILL)
        _ = Spawner.waitBlocking(gateway.pid)
      }
    }
    var listening = false
    for _ in 0..<600 where !listening {
      listening = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("listening on")
      if !listening { try await Task.sleep(for: .milliseconds(50)) }
    }
    try #require(listening, "the gateway serves: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")

    let policy = try NetworkPolicies.policy(
      """
        local:
          endpoints:
            - host: localhost
              port: \(up.port)
              allowed_ips: [127.0.0.1]
          binaries:
            - path: /usr/bin/curl
      """)
    let pki = dir + "/pki"
    try await SandboxGateway.withClient(port: port, ca: pki + "/ca.crt", cert: pki + "/client.crt", key: pki + "/client.key") { c in
      try await c.createWithPolicy("nss", policy)
      let id = try await c.wait("nss", .ready).metadata.id
      try await c.waitLoaded("nss")
      // The supervisor resolves `localhost` (from /etc/hosts) to dial the upstream.
      let r = try await c.exec("nss", ["curl", "-sS", "--max-time", "10", "http://localhost:\(up.port)/hello.txt"], env: viaProxy)
      #expect(r.exitCode == 0 && r.out == "hello-from-upstream\n", "\(r.out) \(r.err)")

      let nsInit = HostProcess.namespaceInit(infoFile: "\(dir)/sandboxes/\(id)/bwrap-info.json")
      let supervisor = try #require(nsInit.flatMap { HostProcess.children($0).first }, "the supervisor runs")
      // The test means something only if the supervisor sees the file.
      let seen = (try? String(contentsOfFile: "/proc/\(supervisor)/root/etc/nsswitch.conf", encoding: .utf8)) ?? ""
      #expect(seen.contains("hosts: hesiod systemd files dns"), "the sandbox's nsswitch.conf: \(seen)")
      let maps = try String(contentsOfFile: "/proc/\(supervisor)/maps", encoding: .utf8)
      let shared = Set(
        maps.split(separator: "\n").compactMap { line -> String? in
          guard let slash = line.firstIndex(of: "/") else { return nil }
          let path = String(line[slash...])
          return path.contains(".so") ? path : nil
        })
      #expect(shared.isEmpty, "shared objects in the static supervisor: \(shared.sorted())")
      try await c.deleteAndWait("nss")
    }
  }
}
