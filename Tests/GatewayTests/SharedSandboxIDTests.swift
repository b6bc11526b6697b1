import Foundation
import GRPCCore
import OpenShellAPI
import SandboxProtocol
import Testing

@testable import Gateway

/// Two gateways serving the same sandbox ids on one host (a copied data directory; `openshell-replay
/// restore` into a new gateway): each sandbox gets its own network namespace, named with its gateway's
/// tag, and a /30 of its own, so stopping one gateway's sandbox leaves the other's network working.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct SharedSandboxIDTests {
  /// Runs a TCP connect from inside sandbox `name` to its proxy at `host`:3128 (through the veth pair and
  /// the namespace's nftables rules); returns the script's output ("connected" when it worked).
  static func reachProxy(_ c: OSClient, _ name: String, _ host: String) async throws -> String {
    let script = "import socket; s=socket.create_connection(('\(host)', \(SandboxProtocol.proxyPort)), 3); print('connected')"
    let r = try await c.exec(name, ["python3", "-c", script])
    return r.out + r.err
  }

  static func allocation(_ dir: String, _ id: String) throws -> SandboxNetworks.Allocation {
    let data = try #require(FileManager.default.contents(atPath: dir + "/sandboxes/\(id)/network.json"))
    return try JSONDecoder().decode(SandboxNetworks.Allocation.self, from: data)
  }

  static func netnsExists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: "/run/netns/" + name) }

  @Test("two gateways on copies of one data directory run the same sandbox id in separate namespaces; stopping one leaves the other working")
  func copiedDataDirectory() async throws {
    try #require(getuid() == 0, "needs root (veth pairs, named network namespaces)")
    let first = try await SandboxGateway.start()
    let dirA = first.dataDirectory
    // With cpu and memory limits where the host has cgroups: both gateways run in this process's cgroup, so the
    // sandboxes' cgroups would collide under one name too.
    let limited = first.running.driver?.cgroups != nil
    let id = try await first.withClient { c -> String in
      let s = try await c.createSandbox(
        .with {
          $0.name = "twin"
          if limited { $0.spec.template.resources.fields = ["cpu": .init(stringValue: "1"), "memory": .init(stringValue: "256Mi")] }
          $0.workspaceScope = .with { $0.workspace = "default" }
        }
      ).sandbox
      try await c.wait("twin", .ready)
      _ = try await c.stopSandbox(.with { $0.name = "twin" })
      try await c.wait("twin", .stopped)
      return s.metadata.id
    }
    await first.stopEverything()
    let dirB = dirA + "-copy"
    let cp = try Spawner.spawn("/bin/cp", ["-a", dirA, dirB], environment: [:])
    try #require(Spawner.waitBlocking(cp.pid) == 0)
    defer { try? FileManager.default.removeItem(atPath: dirB) }

    let a = try await SandboxGateway.start(dataDirectory: dirA)
    let b = try await SandboxGateway.start(dataDirectory: dirB)
    let nsA = SandboxNetworks(sandboxesDirectory: dirA + "/sandboxes").namespaceName(id)
    let nsB = SandboxNetworks(sandboxesDirectory: dirB + "/sandboxes").namespaceName(id)
    var sleeper: SpawnedProcess?
    do {
      #expect(nsA != nsB && nsA.hasPrefix("openshell-\(id)-") && nsB.hasPrefix("openshell-\(id)-"), "\(nsA) \(nsB)")
      for gw in [a, b] {
        try await gw.withClient { c in
          _ = try await c.startSandbox(.with { $0.name = "twin" })
          try await c.wait("twin", .ready)
        }
      }
      #expect(Self.netnsExists(nsA) && Self.netnsExists(nsB))
      let (allocA, allocB) = (try Self.allocation(dirA, id), try Self.allocation(dirB, id))
      #expect(allocA.index != allocB.index, "each gateway's sandbox has its own /30")
      if limited, let da = a.running.driver, let db = b.running.driver, let cgroups = da.cgroups {
        let (dirsA, dirsB) = (cgroups.directories(sandboxID: da.cgroupName(id)), cgroups.directories(sandboxID: db.cgroupName(id)))
        #expect(Set(dirsA).isDisjoint(with: dirsB), "\(dirsA) \(dirsB)")
        #expect((dirsA + dirsB).allSatisfy { FileManager.default.fileExists(atPath: $0) }, "\(dirsA) \(dirsB)")
      }
      let outA = try await a.withClient { c in try await Self.reachProxy(c, "twin", allocA.hostAddress) }
      let outB = try await b.withClient { c in try await Self.reachProxy(c, "twin", allocB.hostAddress) }
      #expect(outA == "connected\n" && outB == "connected\n", "\(outA) \(outB)")

      // Stopping A's sandbox removes A's namespace only; B's sandbox keeps its network.
      try await a.withClient { c in
        _ = try await c.stopSandbox(.with { $0.name = "twin" })
        try await c.wait("twin", .stopped)
      }
      #expect(!Self.netnsExists(nsA))
      #expect(Self.netnsExists(nsB))
      if limited, let da = a.running.driver, let db = b.running.driver, let cgroups = da.cgroups {
        #expect(cgroups.directories(sandboxID: da.cgroupName(id)).allSatisfy { !FileManager.default.fileExists(atPath: $0) })
        #expect(cgroups.directories(sandboxID: db.cgroupName(id)).allSatisfy { FileManager.default.fileExists(atPath: $0) })
      }
      let after = try await b.withClient { c in try await Self.reachProxy(c, "twin", allocB.hostAddress) }
      #expect(after == "connected\n", "\(after)")

      // A namespace under the untagged name of an older gateway: left alone while a process is in it (it
      // may be another gateway's sandbox), removed with the sandbox once nothing runs in it.
      let legacy = SandboxNetworks.legacyName(id)
      try SandboxNetworks.run("/usr/sbin/ip", ["netns", "add", legacy])
      sleeper = try Spawner.spawn("/usr/sbin/ip", ["netns", "exec", legacy, "sleep", "60"], environment: [:])
      for _ in 0..<100 where SandboxNetworks.processes(inNamespace: "/run/netns/" + legacy).isEmpty { try await Task.sleep(for: .milliseconds(20)) }
      try await a.withClient { c in try await c.deleteAndWait("twin") }
      #expect(Self.netnsExists(legacy), "a namespace with a process in it is not removed by the untagged name")
      #expect(Self.netnsExists(nsB))
      if let s = sleeper { kill(s.pid, SIGKILL); _ = Spawner.waitBlocking(s.pid); sleeper = nil }
      try await b.withClient { c in try await c.deleteAndWait("twin") }
      #expect(!Self.netnsExists(nsB))
      #expect(!Self.netnsExists(legacy), "the untagged leftover went with the sandbox")
    } catch {
      if let s = sleeper { kill(s.pid, SIGKILL); _ = Spawner.waitBlocking(s.pid) }
      await a.stopEverything()
      await b.stopEverything()
      throw error
    }
    await a.stopEverything()
    await b.stopEverything()
    for ns in [nsA, nsB, SandboxNetworks.legacyName(id)] where Self.netnsExists(ns) {
      try? SandboxNetworks.run("/usr/sbin/ip", ["netns", "del", ns])
      Issue.record("\(ns) was left behind")
    }
  }
}
