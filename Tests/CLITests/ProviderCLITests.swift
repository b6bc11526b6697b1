import Foundation
import GRPCCore
import Testing

/// `openshell provider …` against a real daemon, plus the canary check over every output, the
/// gateway's log and data dir, and `openshell-replay audit/state`.
@Suite("CLI providers", .serialized, .timeLimit(.minutes(10)))
struct ProviderCLITests {
  /// Discovery variables of every type, emptied (an empty variable counts as unset).
  static let cleared: [String: String] = Dictionary(
    uniqueKeysWithValues: [
      "ANTHROPIC_API_KEY", "CLAUDE_API_KEY", "OPENAI_API_KEY", "OPENCODE_API_KEY", "OPENROUTER_API_KEY", "COPILOT_GITHUB_TOKEN",
      "GH_TOKEN", "GITHUB_TOKEN", "GITLAB_TOKEN", "GLAB_TOKEN", "CI_JOB_TOKEN", "NVIDIA_API_KEY",
    ].map { ($0, "") })

  @Test("create (--from-existing, --credential KEY[=VALUE]) / get / list / update / delete; canary never printed or stored")
  func providerLifecycle() async throws {
    let env = try CLIEnv("prov")
    defer { env.cleanup() }
    let port = freePort()
    var outputs: [String] = []
    func run(_ args: [String], _ extra: [String: String] = [:]) throws -> CLIEnv.Result {
      let r = try env.run(args, env: Self.cleared.merging(extra) { _, n in n })
      outputs.append(r.out + r.err)
      return r
    }
    let canary = "CANARY\(UUID().uuidString.replacingOccurrences(of: "-", with: ""))"

    var r = try env.run(["gateway", "start", "--name", "prov", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")

    // --from-existing: claude reads ANTHROPIC_API_KEY and CLAUDE_API_KEY.
    r = try run(["provider", "create", "--name", "anth", "--type", "claude", "--from-existing"], ["ANTHROPIC_API_KEY": canary + "a"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("✓ Created provider anth"), "\(r)")
    r = try run(["provider", "get", "anth", "-o", "json"])
    #expect(r.code == 0, "\(r)")
    let anth = env.json(r)
    #expect(anth["credential_keys"] as? [String] == ["ANTHROPIC_API_KEY"], "\(r)")
    #expect(anth["type"] as? String == "claude")

    // github (alias gh) reads GITHUB_TOKEN and GH_TOKEN.
    r = try run(["provider", "create", "--name", "hub", "--type", "gh", "--from-existing"], ["GITHUB_TOKEN": canary + "g1", "GH_TOKEN": canary + "g2"])
    #expect(r.code == 0, "\(r)")
    r = try run(["provider", "get", "hub", "-o", "json"])
    #expect(env.json(r)["credential_keys"] as? [String] == ["GH_TOKEN", "GITHUB_TOKEN"], "\(r)")
    #expect(env.json(r)["type"] as? String == "github")

    // Nothing to discover → a clear error naming the variables.
    r = try run(["provider", "create", "--name", "nv", "--type", "nvidia", "--from-existing"])
    #expect(r.code != 0)
    #expect(r.err.contains("NVIDIA_API_KEY"), "\(r)")
    r = try run(["provider", "create", "--name", "x", "--type", "nosuchtype", "--credential", "A=b"])
    #expect(r.code != 0 && r.err.contains("unknown provider type"), "\(r)")
    r = try run(["provider", "create", "--name", "x", "--type", "generic"])
    #expect(r.code != 0 && r.err.contains("no credentials"), "\(r)")

    // --credential KEY reads $KEY; unset or empty fails clearly.
    let v = "OPENSHELL_TEST_UNSET_\(UUID().uuidString.prefix(8).replacingOccurrences(of: "-", with: ""))"
    r = try run(["provider", "create", "--name", "gen", "--type", "generic", "--credential", v])
    #expect(r.code != 0 && r.err.contains("\(v) is not set"), "\(r)")
    r = try run(["provider", "create", "--name", "gen", "--type", "generic", "--credential", v], [v: ""])
    #expect(r.code != 0 && r.err.contains("\(v) is empty"), "\(r)")
    r = try run(
      [
        "provider", "create", "--name", "gen", "--type", "generic", "--credential", v, "--credential", "API_KEY=\(canary)k", "--config",
        "base_url=https://example.test",
      ], [v: canary + "v"])
    #expect(r.code == 0, "\(r)")
    r = try run(["provider", "get", "gen"])
    #expect(r.code == 0 && r.out.contains("API_KEY") && r.out.contains("base_url"), "\(r)")

    // list: counts of keys.
    r = try run(["provider", "list"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("NAME") && r.out.contains("CREDENTIAL_KEYS") && r.out.contains("CONFIG_KEYS"), "\(r)")
    let genRow = r.out.split(separator: "\n").first { $0.hasPrefix("gen ") }.map { $0.split(separator: " ").map(String.init) }
    #expect(genRow == ["gen", "generic", "2", "1"], "\(r)")
    r = try run(["provider", "list", "--names", "--limit", "2", "--offset", "1"])
    #expect(r.out.split(separator: "\n").map(String.init) == ["gen", "hub"], "\(r)")

    // update: rotation of API_KEY, deletion of the $v key, config merge.
    r = try run(["provider", "update", "gen", "--credential", "API_KEY=\(canary)rotated", "--credential", "\(v)=", "--config", "model=m1"])
    #expect(r.code == 0 && r.out.contains("✓ Updated provider gen"), "\(r)")
    r = try run(["provider", "get", "gen", "-o", "json"])
    #expect(env.json(r)["credential_keys"] as? [String] == ["API_KEY"], "\(r)")
    #expect(env.json(r)["config_keys"] as? [String] == ["base_url", "model"], "\(r)")
    // The operator can read the rotated value back.
    let value = try await env.withClient("prov") { c in
      try await c.getProviderCredentials(
        .with {
          $0.name = "gen"; $0.credentialKeys = ["API_KEY"]
        }
      ).credentials["API_KEY"]?.value
    }
    #expect(value == canary + "rotated")

    // delete: by name; missing ones are reported.
    r = try run(["provider", "delete", "anth", "missing-one"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("✓ Deleted provider anth") && r.out.contains("! Provider missing-one not found"), "\(r)")

    // A repeated --name is refused (ArgumentParser would keep the last one silently): one line, nothing created.
    r = try run(["provider", "create", "--name", "twice-a", "--name=twice-b", "--type", "generic", "--credential", "A=b"])
    #expect(r.code != 0 && r.err == "error: --name given 2 times ('twice-a', 'twice-b'): give it once\n", "\(r)")
    r = try run(["provider", "get", "twice-b"])
    #expect(r.code != 0, "nothing was created: \(r)")

    // A forced delete of a provider an inference route uses deletes the route too, and says so.
    r = try run(["provider", "create", "--name", "oa", "--type", "openai", "--credential", "OPENAI_API_KEY=not-a-secret"])
    #expect(r.code == 0, "\(r)")
    r = try run(["inference", "set", "--provider", "oa", "--model", "m1", "--no-verify"])
    #expect(r.code == 0, "\(r)")
    r = try run(["provider", "delete", "oa"])
    #expect(r.code != 0 && r.err.contains("inference route inference.local"), "refused without --force: \(r)")
    r = try run(["provider", "delete", "--force", "oa"])
    #expect(r.code == 0 && r.out.contains("✓ Deleted provider oa"), "\(r)")
    #expect(r.out.contains("! Deleted inference route inference.local (it used provider oa)"), "the route is named: \(r)")
    r = try run(["provider", "delete", "--force", "hub"])
    #expect(r.code == 0 && !r.out.contains("inference route"), "no route used hub: \(r)")

    // The audit of a deleted provider is its history; a provider the log never held is NOT_FOUND, one line.
    r = try run(["audit", "--provider", "anth", "-o", "jsonl"])
    #expect(r.code == 0 && r.out.contains("provider.deleted"), "\(r)")
    r = try run(["audit", "--provider", "nosuch"])
    #expect(r.code != 0 && r.err.contains("provider \"nosuch\" not found") && r.err.split(separator: "\n").count == 1, "\(r)")

    r = try env.run(["gateway", "stop", "--name", "prov"])
    #expect(r.code == 0, "\(r)")

    // Audit: the rotation, by whom, without the value.
    let dataDir = env.dataDir("prov")
    let logDir = dataDir.appendingPathComponent("log").path
    r = try env.replay(["audit", logDir, "--provider", "gen"])
    outputs.append(r.out + r.err)
    #expect(r.code == 0, "\(r)")
    let rotation = r.out.split(separator: "\n").first { $0.contains("provider.credential_rotated") }
    #expect(rotation?.contains("API_KEY") == true && rotation?.contains("operator:") == true, "\(r)")
    r = try env.replay(["audit", logDir, "-o", "json"])
    outputs.append(r.out + r.err)
    r = try env.replay(["state", logDir])
    outputs.append(r.out + r.err)
    #expect(r.out.contains("\"gen\""), "\(r)")
    r = try env.replay(["state", logDir, "--at", "5"])
    outputs.append(r.out + r.err)

    // Zero hits: CLI and replay outputs, the gateway's log (in the data dir) and every file there.
    for o in outputs { #expect(!o.contains(canary), "leak in output: \(o.prefix(300))") }
    #expect(FileManager.default.fileExists(atPath: dataDir.appendingPathComponent("gateway.log").path))
    var hits: [String] = []
    if let e = FileManager.default.enumerator(atPath: dataDir.path) {
      while let rel = e.nextObject() as? String {
        if let d = FileManager.default.contents(atPath: dataDir.appendingPathComponent(rel).path), d.range(of: Data(canary.utf8)) != nil { hits.append(rel) }
      }
    }
    #expect(hits.isEmpty, "canary found in \(hits)")
  }
}
