import Foundation
import Testing

/// Lifecycle commands never act on the wrong gateway: an alias registration (`gateway add --local`) is not
/// its target; a daemon without a pid file is still found; endpoints with impossible ports are refused.
@Suite struct RegistrationSafetyTests {
  @Test func aliasesPidFilesAndEndpoints() throws {
    let env = try CLIEnv("regsafe")
    defer {
      _ = try? env.run(["gateway", "stop", "--name", "g1"])
      env.cleanup()
    }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "g1", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["gateway", "add", "https://127.0.0.1:\(port)", "--local", "--name", "alias1"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["gateway", "stop", "--name", "alias1"])
    #expect(r.code == 1 && r.err.contains("registration of the local gateway 'g1'"), "\(r)")
    // Starting an alias never deploys a new gateway over it; the hint for an unreachable alias names g1.
    r = try env.run(["gateway", "start", "--name", "alias1"])
    #expect(
      r.code == 1 && r.err == "error: gateway 'alias1' is a registration of the local gateway 'g1'; start that one: openshell gateway start --name g1\n", "\(r)"
    )
    #expect(!FileManager.default.fileExists(atPath: env.dataDir("alias1").path))
    #expect(env.metadata("alias1")?["data_dir"] as? String == env.dataDir("g1").path)
    r = try env.run(["gateway", "stop", "--name", "g1"])
    #expect(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "list", "-g", "alias1"])
    #expect(r.code == 1 && r.err.contains("start it with: openshell gateway start --name g1"), "\(r)")
    r = try env.run(["status", "-g", "alias1"])
    #expect(r.code == 1 && r.err.contains("start it with: openshell gateway start --name g1"), "\(r)")
    r = try env.run(["gateway", "start", "--name", "g1"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["gateway", "destroy", "--name", "alias1", "--yes"])
    #expect(r.code == 0 && r.out.contains("'g1' it pointed to is untouched"), "\(r)")
    r = try env.run(["status", "-g", "g1"])
    #expect(r.code == 0, "g1 still runs after its alias was destroyed: \(r)")
    #expect(FileManager.default.fileExists(atPath: env.dataDir("g1").appendingPathComponent("log/data.mdb").path))

    // Without its pid file the daemon is found through its log's writer lock and stopped.
    try FileManager.default.removeItem(at: env.dataDir("g1").appendingPathComponent("gateway.pid"))
    r = try env.run(["gateway", "stop", "--name", "g1"])
    #expect(r.code == 0 && r.out.contains("stopped"), "\(r)")
    r = try env.run(["status", "-g", "g1"])
    #expect(r.code == 1, "\(r)")

    r = try env.run(["sandbox", "list", "--gateway-endpoint", "https://127.0.0.1:99999"])
    #expect(r.code == 1, "\(r)")
    #expect(r.err == "error: invalid gateway endpoint 'https://127.0.0.1:99999': port 99999 is outside 1-65535\n", "\(r)")
  }

  /// The CLI verifies the gateway's certificate against the host it dials (it used to skip host names).
  @Test func serverNameIsVerified() throws {
    let env = try CLIEnv("tlsname")
    defer {
      _ = try? env.run(["gateway", "stop", "--name", "tn"])
      env.cleanup()
    }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "tn", "--port", "\(port)", "--bind", "0.0.0.0"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "list", "-g", "tn"])
    #expect(r.code == 0, "127.0.0.1 is in the certificate: \(r)")
    // 127.0.0.2 reaches the same listener, but the certificate does not name it.
    r = try env.run(["gateway", "add", "https://127.0.0.2:\(port)", "--local", "--name", "other"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "list", "-g", "other"])
    #expect(r.code == 1, "\(r)")
    #expect(
      r.err
        == "error: cannot trust gateway 'other' at https://127.0.0.2:\(port): the gateway's certificate is not issued for this host or address (`openshell gateway start --gateway-host H` adds a name to it)\n",
      "\(r)")
    r = try env.run(["status", "-g", "other"])
    #expect(r.code == 1 && r.out.contains("certificate is not issued for this host"), "\(r)")
  }
}
