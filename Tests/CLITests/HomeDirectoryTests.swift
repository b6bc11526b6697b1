import Foundation
import Testing

/// Without XDG variables the CLI keeps its registrations and local gateways under `$HOME` (`.config/openshell`,
/// `.local/state/openshell`), as OpenShell's CLI does — also for root, whose passwd home Foundation would
/// otherwise use (scripts that read `$HOME` then did not find the gateway the CLI had started).
@Suite struct HomeDirectoryTests {
  @Test func registrationAndStateFollowHome() throws {
    var env = try CLIEnv("home")
    let home = env.root.appendingPathComponent("home")
    try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
    env.extraEnv["HOME"] = home.path
    env.unsetEnv = ["XDG_CONFIG_HOME", "XDG_STATE_HOME"]
    defer {
      _ = try? env.run(["gateway", "stop", "--name", "homegw"])
      env.cleanup()
    }
    let port = freePort()
    var r = try env.run(["gateway", "start", "--name", "homegw", "--port", "\(port)"])
    try #require(r.code == 0, "\(r)")
    let metadata = home.appendingPathComponent(".config/openshell/gateways/homegw/metadata.json")
    let data = home.appendingPathComponent(".local/state/openshell/gateways/homegw")
    #expect(FileManager.default.fileExists(atPath: metadata.path), "\(metadata.path)")
    #expect(FileManager.default.fileExists(atPath: data.appendingPathComponent("log").path))
    #expect(try String(contentsOf: home.appendingPathComponent(".config/openshell/active_gateway"), encoding: .utf8) == "homegw")
    #expect(!FileManager.default.fileExists(atPath: env.config.appendingPathComponent("openshell").path))
    r = try env.run(["status"])
    #expect(r.code == 0 && r.out.contains("homegw"), "\(r)")
    // Relative XDG values are ignored (XDG base directory specification): still $HOME's.
    r = try env.run(["status"], env: ["XDG_CONFIG_HOME": "relative-config", "XDG_STATE_HOME": "relative-state"])
    #expect(r.code == 0 && r.out.contains("homegw"), "\(r)")
    r = try env.run(["gateway", "stop", "--name", "homegw"])
    #expect(r.code == 0, "\(r)")
  }

  @Test func aHomeThatIsAFileIsOneReadableLine() throws {
    var env = try CLIEnv("homefile")
    defer { env.cleanup() }
    let file = env.root.appendingPathComponent("home-file")
    try Data().write(to: file)
    env.extraEnv["HOME"] = file.path
    env.unsetEnv = ["XDG_CONFIG_HOME", "XDG_STATE_HOME"]
    let r = try env.run(["gateway", "start", "--name", "nohome", "--port", "\(freePort())"])
    #expect(r.code == 1, "\(r)")
    #expect(r.err == "error: cannot write \(file.path)/.local: Not a directory\n", "\(r)")
  }

  /// A config directory that cannot be written is found before a gateway is deployed: exit 1 and nothing runs
  /// (found by a newcomer: the gateway was started, then its registration failed and it kept running).
  @Test func anUnwritableConfigDirStartsNoGateway() throws {
    var env = try CLIEnv("cfgfile")
    let home = env.root.appendingPathComponent("home")
    try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
    try Data().write(to: home.appendingPathComponent(".config"))
    env.extraEnv["HOME"] = home.path
    env.unsetEnv = ["XDG_CONFIG_HOME", "XDG_STATE_HOME"]
    defer {
      _ = try? env.run(["gateway", "stop", "--name", "cfggw"])
      env.cleanup()
    }
    let r = try env.run(["gateway", "start", "--name", "cfggw", "--port", "\(freePort())"])
    #expect(r.code == 1, "\(r)")
    #expect(r.err == "error: cannot write \(home.path)/.config/openshell: Not a directory\n", "\(r)")
    #expect(!r.out.contains("Deploying"), "\(r)")
    let pidFile = home.appendingPathComponent(".local/state/openshell/gateways/cfggw/gateway.pid")
    #expect(!FileManager.default.fileExists(atPath: pidFile.path), "a gateway was started")
  }
}
