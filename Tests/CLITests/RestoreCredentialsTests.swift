import Foundation
import Testing

/// `--recreate` then restore brings providers back with working credentials (the archive's data keys are
/// re-wrapped under the gateway's master key); a restore without key material names the providers it
/// cannot decrypt, and using them fails with a clear message instead of an empty environment.
@Suite struct RestoreCredentialsTests {
  @Test func restoredProvidersKeepTheirCredentials() throws {
    let env = try CLIEnv("rkeys")
    defer {
      // destroy (not stop): it also ends the sandboxes' processes, which outlive a stopped gateway.
      _ = try? env.run(["gateway", "destroy", "--name", "rk", "--yes"])
      _ = try? env.run(["gateway", "destroy", "--name", "rk2", "--yes"])
      env.cleanup()
    }
    let canary = "sk-canary-\(UUID().uuidString.prefix(8))"
    var r = try env.run(["gateway", "start", "--name", "rk", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["provider", "create", "--name", "p1", "--type", "openai", "--from-existing"], env: ["OPENAI_API_KEY": canary])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "keeper", "--", "sh", "-c", "echo precious > /sandbox/f.txt"])
    try #require(r.code == 0, "\(r)")
    // --recreate would end the running sandbox: without a terminal it needs --yes, and says which.
    r = try env.run(["gateway", "start", "--name", "rk", "--recreate"])
    #expect(
      r.code == 1
        && r.err == "error: --recreate ends 1 running sandbox(es) of gateway 'rk': keeper. Continue? Refusing without a terminal; pass --yes to confirm\n",
      "\(r)")
    #expect(!FileManager.default.fileExists(atPath: env.state.appendingPathComponent("openshell/archive/rk").path))
    r = try env.run(["gateway", "start", "--name", "rk", "--recreate", "--yes"])
    try #require(r.code == 0, "\(r)")
    let archiveRoot = env.state.appendingPathComponent("openshell/archive/rk")
    let archive = try #require(try FileManager.default.contentsOfDirectory(atPath: archiveRoot.path).first)
    r = try env.run(["gateway", "stop", "--name", "rk"])
    r = try env.replay(["restore", archiveRoot.appendingPathComponent(archive).path, "--gateway", "rk"])
    #expect(r.code == 0, "\(r)")
    #expect(r.out.contains("keys: 1 data key (provider credentials, sandbox environments) imported"), "\(r)")
    r = try env.run(["gateway", "start", "--name", "rk"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "withkey", "--no-keep", "--provider", "p1", "--", "printenv", "OPENAI_API_KEY"])
    #expect(r.code == 0, "\(r)")
    // The sandbox holds the placeholder (the proxy resolves it); its creation needed the decrypted value.
    #expect(r.out == "openshell:resolve:env:OPENAI_API_KEY\n", "the restored credential reaches the sandbox's supervisor")
    // The workspace of a restored sandbox comes back from the archived data dir.
    r = try env.run(["sandbox", "start", "keeper"])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "exec", "keeper", "--", "cat", "/sandbox/f.txt"])
    #expect(r.out == "precious\n", "\(r)")
    r = try env.run(["gateway", "stop", "--name", "rk"])

    // An exported log carries no keys: the restore warns, and the provider fails loudly when used.
    let exported = env.root.appendingPathComponent("rk.oslog").path
    r = try env.replay(["export", env.dataDir("rk").appendingPathComponent("log").path, exported])
    try #require(r.code == 0, "\(r)")
    r = try env.replay(["restore", exported, "--gateway", "rk2", "--data-dir", env.dataDir("rk2").path])
    #expect(r.code == 0, "\(r)")
    #expect(r.err.contains("warning: the credentials of provider p1 cannot be decrypted"), "\(r)")
    r = try env.run(["gateway", "start", "--name", "rk2", "--port", "\(freePort())"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "nokey", "--provider", "p1"])
    #expect(r.code == 1, "\(r)")
    #expect(r.err.contains("the credentials of provider p1 cannot be decrypted") && r.err.contains("openshell provider delete p1"), "\(r)")
    #expect(!(r.out + r.err).contains(canary))
  }
}
