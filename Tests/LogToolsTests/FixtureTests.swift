import EventLog
import Foundation
import LogTools
import Projections
import Scenarios
import Testing

/// Repository paths, found from this file's location.
enum Repo {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
  static let fixtures = root + "/Fixtures"
}

func temporaryDirectory(_ label: String = "logtools") -> String {
  let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString)").path
  try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  return dir
}

/// Copies a fixture's log to a temp dir (tests never touch the committed files).
func fixtureCopy(_ name: String) throws -> String {
  let dir = temporaryDirectory(name)
  try FileManager.default.copyItem(atPath: "\(Repo.fixtures)/\(name)/log", toPath: "\(dir)/log")
  return "\(dir)/log"
}

func openReadOnly(_ dir: String) throws -> EventLog {
  var o = EventLog.Options()
  o.readOnly = true
  return try EventLog.open(directory: dir, options: o)
}

@Suite struct FixtureTests {
  @Test(arguments: Scenarios.all.map(\.name))
  func fixtureVerifiesAndMatchesExpectedState(name: String) throws {
    let log = try openReadOnly(try fixtureCopy(name))
    defer { log.close() }
    let result = try LogVerifier.verify(log)
    #expect(result.ok, "\(name): \(result.problem ?? "")")
    #expect(result.snapshotMatches == true)
    let expected = try String(contentsOfFile: "\(Repo.fixtures)/\(name)/expected-state.json", encoding: .utf8)
    let actual = StateView(try StateLoader.replay(log)).json() + "\n"
    #expect(actual == expected)
    // Snapshot + tail gives the same state as a full replay.
    let loaded = try StateLoader.load(log)
    #expect(loaded.snapshotSeq == log.headSeq)
    #expect(SnapshotCodec.encode(loaded.state) == SnapshotCodec.encode(try StateLoader.replay(log)))
  }

  @Test(arguments: Scenarios.all.map(\.name))
  func regeneratingAFixtureGivesTheSameChain(name: String) throws {
    let scenario = try #require(Scenarios.named(name))
    let dir = temporaryDirectory("regen")
    let state = try FixtureWriter.write(scenario, logDirectory: dir)
    let fresh = try openReadOnly(dir)
    defer { fresh.close() }
    let committed = try openReadOnly(try fixtureCopy(name))
    defer { committed.close() }
    #expect(fresh.headSeq == committed.headSeq)
    #expect(fresh.headHash == committed.headHash, "the fixture log must be reproducible from its scenario")
    #expect(state.lastSeq == fresh.headSeq)
  }

  @Test func exportImportRoundTripKeepsTheChain() throws {
    let log = try openReadOnly(try fixtureCopy("provider-rotation"))
    defer { log.close() }
    let archive = temporaryDirectory("archive") + "/log.archive"
    let n = try LogArchive.export(log, to: archive)
    #expect(n == log.headSeq)
    // Owner-only, never clobbered without asking, no partial file left behind.
    let mode = (try FileManager.default.attributesOfItem(atPath: archive)[.posixPermissions] as? NSNumber)?.intValue
    #expect(mode == 0o600)
    #expect(throws: LogArchive.ArchiveError.self) { try LogArchive.export(log, to: archive) }
    #expect(try LogArchive.export(log, to: archive, overwrite: true) == n)
    #expect(!FileManager.default.fileExists(atPath: archive + ".partial"))
    let restoredDir = temporaryDirectory("restored")
    let head = try LogArchive.importArchive(from: archive, into: restoredDir)
    #expect(head == log.headSeq)
    let restored = try openReadOnly(restoredDir)
    defer { restored.close() }
    #expect(restored.headHash == log.headHash)
    #expect(try LogVerifier.verify(restored).ok)
    #expect(SnapshotCodec.encode(try StateLoader.replay(restored)) == SnapshotCodec.encode(try StateLoader.replay(log)))
  }

  @Test func tamperedArchiveIsRejected() throws {
    let log = try openReadOnly(try fixtureCopy("sandbox-lifecycle"))
    defer { log.close() }
    let archive = temporaryDirectory("archive") + "/log.archive"
    try LogArchive.export(log, to: archive)
    var text = try String(contentsOfFile: archive, encoding: .utf8)
    text = text.replacingOccurrences(of: "\"actor\":\"system\"", with: "\"actor\":\"mallory\"")
    try text.write(toFile: archive, atomically: true, encoding: .utf8)
    #expect(throws: LogArchive.ArchiveError.self) {
      try LogArchive.importArchive(from: archive, into: temporaryDirectory("restored"))
    }
    // Truncation (a missing trailer) is also rejected.
    let lines = text.split(separator: "\n")
    try lines.dropLast().joined(separator: "\n").write(toFile: archive, atomically: true, encoding: .utf8)
    #expect(throws: LogArchive.ArchiveError.self) {
      try LogArchive.importArchive(from: archive, into: temporaryDirectory("restored"))
    }
  }

  @Test func auditShowsRotationsWithoutSecrets() throws {
    let log = try openReadOnly(try fixtureCopy("provider-rotation"))
    defer { log.close() }
    var q = AuditQuery()
    q.provider = "claude"
    let entries = try Audit.timeline(log, query: q)
    let rotations = entries.filter { $0.type == "provider.credential_rotated" }
    #expect(rotations.map(\.actor) == ["operator:CN=alice", "operator:CN=bob"])
    #expect(rotations.allSatisfy { $0.summary.contains("ANTHROPIC_API_KEY") })
    let rendered = Audit.table(entries) + String(decoding: try JSONEncoder().encode(entries), as: UTF8.self)
    #expect(!rendered.contains("sk-ant-fixture"))
    // The provider's own records, and the sandbox it was attached to (the event names it: providerReferences).
    #expect(entries.map(\.type) == ["provider.created", "sandbox.requested", "provider.credential_rotated", "provider.credential_rotated"])
    #expect(entries.filter { !$0.aggregate.hasPrefix("provider/") }.allSatisfy { $0.summary.contains("providers claude") })
    // Filters by actor and type.
    var byActor = AuditQuery()
    byActor.actor = "operator:CN=bob"
    #expect(try Audit.timeline(log, query: byActor).map(\.type) == ["provider.credential_rotated"])
    var byType = AuditQuery()
    byType.types = ["certificate."]
    #expect(try Audit.timeline(log, query: byType).count == 3)
  }

  @Test func stateAtAPastSeqShowsADeletedProviderRedacted() throws {
    let log = try openReadOnly(try fixtureCopy("provider-rotation"))
    defer { log.close() }
    let now = try StateLoader.replay(log)
    #expect(now.provider(named: "github", workspace: "default") == nil)
    let past = try StateLoader.replay(log, through: .seq(log.headSeq - 1))
    let github = try #require(past.provider(named: "github", workspace: "default"))
    #expect(github.config == ["org": "nvidia"])
    let view = StateView(past)
    #expect(view.providers.first { $0.name == "github" }?.credentials == ["GITHUB_TOKEN": "<sealed>"])
    #expect(!view.json().contains("ghp_fixture"))
    #expect(try !view.yaml().contains("ghp_fixture"))
  }

  @Test func stateAtATime() throws {
    let log = try openReadOnly(try fixtureCopy("sandbox-lifecycle"))
    defer { log.close() }
    // Five events after the epoch (one per second): only the bootstrap batch.
    let at = ScenarioBuilder.epochNs + 5_500_000_000
    let state = try StateLoader.replay(log, through: .time(at))
    #expect(state.lastSeq == 5)
    #expect(state.sandboxes.isEmpty)
  }
}
