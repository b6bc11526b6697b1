import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// `gateway stop` right after `sandbox delete`: the deleted sandbox's teardown (processes, network namespace,
/// directory) finishes before the gateway exits instead of waiting for the next start's sweep (each CI run
/// used to leave one empty `openshell-<id>-<tag>` namespace from the SDK conformance run's last delete).
@Suite("Gateway shutdown finishes queued sandbox teardown", .serialized, .timeLimit(.minutes(4)))
struct ShutdownDrainTests {
  @Test("create, delete at once (as the SDK's smoke test does), stop: no namespace, process or directory remains")
  func deleteThenStop() async throws {
    try #require(getuid() == 0, "network namespaces need root")
    let env = try CLIEnv("drain")
    defer { env.cleanup() }
    let sandboxes = env.dataDir("drain").appendingPathComponent("sandboxes").path
    for round in 0..<3 {
      var r = try env.run(["gateway", "start", "--name", "drain", "--port", "\(freePort())"])
      try #require(r.code == 0, "\(r)")
      // CreateSandbox answers before the sandbox runs; the delete lands while its start is under way.
      let id = try await env.withClient("drain") { api in
        let made = try await api.createSandbox(.with { $0.name = "box\(round)" }).sandbox.metadata.id
        try await Task.sleep(for: .milliseconds(150 * round))
        _ = try await api.deleteSandbox(.with { $0.name = "box\(round)" })
        return made
      }
      r = try env.run(["gateway", "stop"])
      try #require(r.code == 0, "\(r)")

      let namespaces = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns"))?.filter { $0.hasPrefix("openshell-\(id)") } ?? []
      #expect(namespaces.isEmpty, "round \(round): namespace left after stop: \(namespaces)")
      #expect(!FileManager.default.fileExists(atPath: sandboxes + "/" + id), "round \(round): sandbox directory left after stop")
      var left: [String] = []
      for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard Int32(entry) != nil, let cmd = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
        if String(decoding: cmd, as: UTF8.self).contains(sandboxes + "/" + id) { left.append(entry) }
      }
      #expect(left.isEmpty, "round \(round): processes of the deleted sandbox left after stop: \(left)")
    }
  }
}
