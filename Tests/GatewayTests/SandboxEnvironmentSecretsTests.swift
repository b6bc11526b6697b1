import EventLog
import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import SandboxProtocol
import Testing

@testable import Gateway

/// `sandbox create --env` values are sealed per sandbox, never in the log in plain text, redacted in every
/// response, delivered to the sandbox's processes, and crypto-shredded with the sandbox (issue 16).
@Suite(.serialized) struct SandboxEnvironmentSecretsTests {
  @Test func environmentValuesAreSealedRedactedDeliveredAndShredded() async throws {
    let canary = "sk-env-\(UUID().uuidString)"
    let templateCanary = "tpl-\(UUID().uuidString)"
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    let keys = gw.dataDirectory + "/keys/data"
    try await gw.withClient { c in
      let created = try await c.createSandbox(
        .with {
          $0.name = "envsecret"
          $0.spec = .with {
            $0.environment = ["API_TOKEN": canary, "EMPTY": ""]
            $0.template.environment = ["FROM_TEMPLATE": templateCanary]
          }
          $0.workspaceScope = .with { $0.workspace = "default" }
        }
      ).sandbox
      let id = created.metadata.id
      // Responses show the names, never the values.
      #expect(created.spec.environment == ["API_TOKEN": "REDACTED", "EMPTY": ""])
      #expect(created.spec.template.environment == ["FROM_TEMPLATE": "REDACTED"])
      try await c.wait("envsecret", .ready)
      let listed = try await c.listSandboxes(.with { $0.workspaceScope = .with { $0.workspace = "default" } }).sandboxes
      #expect(listed.first { $0.metadata.id == id }?.spec.environment["API_TOKEN"] == "REDACTED")

      // The sandbox's processes get the real values.
      let r = try await c.exec("envsecret", ["sh", "-c", "printf '%s|%s|%s' \"$API_TOKEN\" \"$FROM_TEMPLATE\" \"${EMPTY-unset}\""])
      #expect(r.exitCode == 0 && r.out == "\(canary)|\(templateCanary)|", "\(r.out) \(r.err)")
      // An exec whose arguments carry the value is recorded redacted.
      let echo = try await c.exec("envsecret", ["echo", canary])
      #expect(echo.out == canary + "\n")

      // Nor any file of the data directory once the supervisor started (launch.json kept only the names),
      // so an archive of it (`gateway start --recreate`) holds none either.
      let holders = try await Self.filesStillHolding([canary, templateCanary], under: gw.dataDirectory)
      #expect(holders.isEmpty, "files holding an environment value: \(holders)")
      let launch = try Self.launchDescription(gw.dataDirectory, id)
      #expect(launch.environment == ["API_TOKEN": "", "EMPTY": "", "FROM_TEMPLATE": ""], "\(launch.environment)")
      // The supervisor keeps them: a later exec still gets the real value.
      let again = try await c.exec("envsecret", ["printenv", "API_TOKEN"])
      #expect(again.out == canary + "\n", "\(again.out) \(again.err)")

      // No record of the log holds either value; sandbox.requested carries them sealed.
      let log = gw.running.store.log
      var requested: Openshell_Events_V1_SandboxRequested?
      try log.forEach(from: 1) { rec in
        let text = String(decoding: rec.payload, as: UTF8.self)
        #expect(!text.contains(canary) && !text.contains(templateCanary), "seq \(rec.seq) \(rec.type) holds an environment value")
        if case .sandboxRequested(let e)? = try? GatewayEvent.decode(rec).kind, e.id == id { requested = e }
      }
      let event = try #require(requested)
      #expect(event.envKeyID == SandboxEnvironmentSecrets.keyID(sandboxID: id))
      #expect(Set(event.sealedEnvironment.keys) == ["API_TOKEN"] && Set(event.sealedTemplateEnvironment.keys) == ["FROM_TEMPLATE"])
      let spec = try Openshell_V1_SandboxSpec(serializedBytes: event.spec)
      #expect(spec.environment == ["API_TOKEN": "", "EMPTY": ""] && spec.template.environment == ["FROM_TEMPLATE": ""])
      #expect(FileManager.default.fileExists(atPath: "\(keys)/\(event.envKeyID).key"))

      // Deleting the sandbox destroys its key: the sealed values can never be opened again.
      try await c.deleteAndWait("envsecret")
      let vault = try SecretVault(directory: gw.dataDirectory + "/keys")
      var gone = false
      for _ in 0..<100 where !gone {
        gone = !vault.hasDataKey(event.envKeyID)
        if !gone { try await Task.sleep(for: .milliseconds(50)) }
      }
      #expect(gone, "the environment key outlived its sandbox")
      #expect(throws: SecretVault.VaultError.self) {
        try vault.open(event.sealedEnvironment["API_TOKEN"]!, keyID: event.envKeyID, name: "env/API_TOKEN")
      }
    }
    await gw.stopEverything()
  }

  @Test func aSandboxWithoutValuesGetsNoKeyAndOrphanKeysAreShreddedAtStart() async throws {
    let dir = try GatewayTestSupport.temporaryDirectory("envjanitor")
    // An orphan: a key made for a create whose event never landed (a crash between the two).
    let vault = try SecretVault(directory: dir + "/keys")
    let orphan = SandboxEnvironmentSecrets.keyID(sandboxID: UUID().uuidString.lowercased())
    try vault.createDataKey(id: orphan)
    #expect(vault.hasDataKey(orphan))
    #expect(throws: SecretVault.VaultError.self) { try vault.createDataKey(id: "dk-../escape") }
    let gw = try await SandboxGateway.start(dataDirectory: dir)
    defer { Task { await gw.stopEverything() } }
    #expect(!vault.hasDataKey(orphan), "the start-up janitor left an orphan environment key")
    try await gw.withClient { c in
      let s = try await c.create("noenv", env: ["EMPTY": ""])
      #expect(!vault.hasDataKey(SandboxEnvironmentSecrets.keyID(sandboxID: s.metadata.id)))
      try await c.wait("noenv", .ready)
      try await c.deleteAndWait("noenv")
    }
    await gw.stopEverything()
  }

  /// A supervisor that ends before it connects (here: one that exits at once) read launch.json but never
  /// triggered the scrub of a connect: its exit and the stop remove the values (found by a newcomer's review).
  @Test func aSupervisorThatEndsBeforeConnectingLeavesNoValuesOnDisk() async throws {
    let canary = "sk-early-\(UUID().uuidString)"
    let dir = try GatewayTestSupport.temporaryDirectory("envearly")
    let script = try Self.supervisorScript(dir + "-bin", "sleep 0.3\nexit 3")
    let gw = try await SandboxGateway.start(dataDirectory: dir) { $0.supervisorBinary = script }
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      let s = try await c.create("early", env: ["API_TOKEN": canary])
      let failed = try await c.wait("early", .error)
      #expect(failed.status.conditions.first { $0.type == "Ready" }?.reason == "SupervisorExited", "\(failed.status)")
      let holders = try await Self.filesStillHolding([canary], under: gw.dataDirectory)
      #expect(holders.isEmpty, "files holding an environment value: \(holders)")
      let launch = try Self.launchDescription(dir, s.metadata.id)
      #expect(launch.environment == ["API_TOKEN": ""], "\(launch.environment)")
      try await c.deleteAndWait("early")
    }
    await gw.stopEverything()
  }

  /// A supervisor that had not connected when its gateway stopped is adopted by the next gateway, which gives it the
  /// same deadline: it is stopped, the values leave launch.json and the sandbox turns ERROR (found by a newcomer:
  /// such a sandbox stayed PROVISIONING with the value on disk).
  @Test func anAdoptedSupervisorThatNeverConnectsIsStoppedAndScrubbed() async throws {
    let canary = "sk-adopt-\(UUID().uuidString)"
    let dir = try GatewayTestSupport.temporaryDirectory("envadopt")
    let script = try Self.supervisorScript(dir + "-bin", "exec sleep 600")
    let first = try await SandboxGateway.start(dataDirectory: dir) {
      $0.supervisorBinary = script
      $0.supervisorReadyTimeout = .seconds(120)
    }
    let id = try await first.withClient { c in try await c.create("adopt", env: ["API_TOKEN": canary]).metadata.id }
    let instanceFile = "\(dir)/sandboxes/\(id)/instance.json"
    for _ in 0..<200 where !FileManager.default.fileExists(atPath: instanceFile) { try await Task.sleep(for: .milliseconds(50)) }
    try #require(FileManager.default.fileExists(atPath: instanceFile), "the supervisor started")
    #expect(!Self.filesHolding([canary], under: dir).isEmpty, "launch.json holds the value until the supervisor connects")
    let port = first.port
    await first.stop()  // the supervisor keeps running, unconnected

    let second = try await SandboxGateway.start(dataDirectory: dir, port: port) {
      $0.supervisorBinary = script
      $0.supervisorReadyTimeout = .seconds(2)
    }
    defer { Task { await second.stopEverything() } }
    try await second.withClient { c in
      let failed = try await c.wait("adopt", .error, timeout: .seconds(30))
      #expect(failed.status.conditions.first { $0.type == "Ready" }?.reason == "SupervisorNotReady", "\(failed.status)")
      #expect(Self.filesHolding([canary], under: dir).isEmpty)
      // `openshell logs` says why.
      let logs = try await c.getSandboxLogs(
        .with {
          $0.sandbox = "adopt"; $0.workspaceScope = .with { $0.workspace = "default" }
        }
      ).logs
      #expect(logs.contains { $0.level == "ERROR" && $0.message.hasPrefix("the supervisor did not connect within") }, "\(logs.map(\.message))")
      try await c.deleteAndWait("adopt")
    }
    await second.stopEverything()
  }

  /// A stand-in supervisor: `openshell-sandbox` in `bin` running `body` under /bin/sh, beside the real launcher
  /// (the driver starts the launcher found next to the supervisor binary). Returns its path.
  static func supervisorScript(_ bin: String, _ body: String) throws -> String {
    try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
    let script = bin + "/openshell-sandbox"
    try "#!/bin/sh\n\(body)\n".write(toFile: script, atomically: true, encoding: .utf8)
    chmod(script, 0o755)
    let realBin = (LocalComputeDriver.defaultSupervisorBinary() as NSString).deletingLastPathComponent
    try FileManager.default.createSymbolicLink(
      atPath: bin + "/" + SandboxProtocol.launcherName, withDestinationPath: realBin + "/" + SandboxProtocol.launcherName)
    return script
  }

  /// ``filesHolding(_:under:)`` once it is empty, or after 5 s (the scrub follows the event that causes it).
  static func filesStillHolding(_ needles: [String], under root: String) async throws -> [String] {
    var holders = filesHolding(needles, under: root)
    for _ in 0..<50 where !holders.isEmpty {
      try await Task.sleep(for: .milliseconds(100))
      holders = filesHolding(needles, under: root)
    }
    return holders
  }

  /// Sandbox `id`'s `run/launch.json` in the gateway data directory `dir`.
  static func launchDescription(_ dir: String, _ id: String) throws -> SupervisorLaunch {
    try JSONDecoder().decode(SupervisorLaunch.self, from: Data(contentsOf: URL(fileURLWithPath: "\(dir)/sandboxes/\(id)/run/launch.json")))
  }

  /// Regular files under `root` (the LMDB files excepted: their records are checked one by one) whose bytes
  /// contain one of `needles`.
  static func filesHolding(_ needles: [String], under root: String) -> [String] {
    guard let walker = FileManager.default.enumerator(atPath: root) else { return [] }
    var found: [String] = []
    while let relative = walker.nextObject() as? String {
      let path = root + "/" + relative
      guard !relative.hasSuffix(".mdb"), (walker.fileAttributes?[.type] as? FileAttributeType) == .typeRegular,
        let data = FileManager.default.contents(atPath: path)
      else { continue }
      if needles.contains(where: { data.range(of: Data($0.utf8)) != nil }) { found.append(relative) }
    }
    return found
  }
}
