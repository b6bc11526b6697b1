import ArgumentParser
import Foundation

/// `openshell gateway bundle --name N` (hidden): prints a local gateway's client bundle and settings
/// as JSON (``RemoteBundle``). `gateway start --remote` runs it on the host over SSH to fetch the
/// operator certificate; it is the same user's own data dir, read through the same SSH session.
struct GatewayBundle: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bundle", abstract: "Print a local gateway's client bundle as JSON (used by gateway start --remote).",
    shouldDisplay: false)
  @Option(help: "Gateway name.") var name: String

  func run() async throws {
    try await cliRun {
      try ClientRegistry.validateName(name)
      let gw = LocalGateway(name: name)
      guard let c = gw.launchConfig else { throw CLIError("gateway '\(name)' has no launch config in \(gw.dataDir.path)") }
      func read(_ f: String) throws -> String {
        guard let s = try? String(contentsOfFile: gw.pki(f), encoding: .utf8) else { throw CLIError("missing \(gw.pki(f))") }
        return s
      }
      guard c.authMode == "mtls" else { throw CLIError("gateway '\(name)' runs in \(c.authMode) mode; remote deployments use mtls") }
      let bundle = RemoteBundle(
        name: name, port: c.port, bind: c.bind, auth_mode: c.authMode, ca: try read("ca.crt"), cert: try read("client.crt"),
        key: try read("client.key"), data_dir: gw.dataDir.path, log_file: gw.logFile.path, pid: gw.runningPID)
      let enc = JSONEncoder()
      enc.outputFormatting = [.sortedKeys]
      FileHandle.standardOutput.write(try enc.encode(bundle))
      FileHandle.standardOutput.write(Data("\n".utf8))
    }
  }
}
