import EventLog
import Foundation
import LogTools
import Projections
import Scenarios
import Testing

/// Runs a Python tool of Tests/audit-tools with the venv scripts/setup.sh makes (.build-venv-audit).
func auditToolsPython(_ script: String, _ args: [String]) throws -> (code: Int32, out: String) {
  let python = Repo.root + "/.build-venv-audit/bin/python"
  guard FileManager.default.isExecutableFile(atPath: python) else {
    throw ToolMissing(message: "\(python) is missing: run scripts/setup.sh (it installs Tests/audit-tools/requirements.txt)")
  }
  let p = Process()
  p.executableURL = URL(fileURLWithPath: python)
  p.arguments = [Repo.root + "/Tests/audit-tools/" + script] + args
  let pipe = Pipe()
  p.standardOutput = pipe
  p.standardError = pipe
  try p.run()
  let out = pipe.fileHandleForReading.readDataToEndOfFile()
  p.waitUntilExit()
  return (p.terminationStatus, String(decoding: out, as: UTF8.self))
}

struct ToolMissing: Error, CustomStringConvertible {
  let message: String
  var description: String { message }
}

/// OCSF export (issue 12): every record kind maps to the class of docs/audit-ocsf.md, every emitted event
/// validates against the OCSF 1.5.0 schema (ocsf-json-schema + jsonschema), and no secret is in any of them.
@Suite struct OCSFTests {
  /// The OCSF events of every record of the log in `dir`.
  static func ocsfLines(_ log: EventLog) throws -> [(type: String, json: [String: Any], line: String)] {
    try Audit.timeline(log, query: AuditQuery(), ocsf: true).flatMap { entry in
      try (entry.ocsf ?? []).map { line in
        (entry.type, (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]) ?? [:], line)
      }
    }
  }

  static func validate(_ lines: [String], requireClasses: String = "") throws -> (code: Int32, out: String) {
    let file = temporaryDirectory("ocsf") + "/events.jsonl"
    try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
    var args = [file, "--version", OCSF.schemaVersion]
    if !requireClasses.isEmpty { args += ["--require-classes", requireClasses] }
    return try auditToolsPython("validate_ocsf.py", args)
  }

  @Test func everyEventKindMapsToItsClassAndValidatesWithoutSecrets() async throws {
    let canary = "canary-\(UUID().uuidString)"
    #expect(AllEventKinds.events(canary: canary).map(\.1.typeName).count >= AllEventKinds.schemaKindCount)
    #expect(
      Set(AllEventKinds.events(canary: canary).map(\.1.typeName)).count == AllEventKinds.schemaKindCount,
      "the sample covers every event kind of the schema")
    let dir = temporaryDirectory("ocsf-kinds")
    let log = try await AllEventKinds.writeLog(dir, canary: canary)
    defer { log.close() }
    let events = try Self.ocsfLines(log)
    // Every record gives at least one event; the network report one per destination.
    #expect(Set(events.map(\.type)).count == AllEventKinds.schemaKindCount)
    #expect(events.filter { $0.type == "sandbox.network_denials" }.count == 2)

    func only(_ type: String) throws -> [[String: Any]] { events.filter { $0.type == type }.map(\.json) }
    func ids(_ e: [String: Any]) -> [Int] { [e["class_uid"] as? Int ?? 0, e["activity_id"] as? Int ?? 0] }
    let refusals = try only("audit.access_refused")
    #expect(
      refusals.map(ids) == [[3002, 1], [3003, 99], [3002, 1], [3002, 1]], "UNAUTHENTICATED is a failed logon, PERMISSION_DENIED a refused authorization")
    #expect(refusals.map { $0["count"] as? Int } == [1000, 3, 30, 1])
    // Unverified clients: one identity, the window's samples in `unmapped`; an older record's claim (kept in its
    // identity as presented) is escaped on the way out.
    let unverified = refusals[2]
    #expect((unverified["user"] as? [String: Any])?["uid"] as? String == "unverified")
    let samples = try #require(unverified["unmapped"] as? [String: Any])
    #expect(samples["claimed_subject"] as? String == "CN=evil\\nline,OU=operator,O=openshell")
    #expect(samples["distinct_subjects"] as? Int == 30 && samples["distinct_peers"] as? Int == 2)
    let legacy = try #require((refusals[3]["user"] as? [String: Any])?["uid"] as? String)
    #expect(legacy == "unverified:CN=old\\nline\\u{001B}[31m,O=openshell", "\(legacy)")
    #expect((refusals[3]["message"] as? String)?.contains("\\u{001B}") == true, "\(refusals[3])")
    #expect(refusals.allSatisfy { $0["status_id"] as? Int == 2 })
    let src = try #require(refusals.first?["src_endpoint"] as? [String: Any])
    #expect(src["ip"] as? String == "127.0.0.1" && src["port"] as? Int == 50123)
    #expect((refusals[1]["src_endpoint"] as? [String: Any])?["ip"] as? String == "::1")
    #expect((refusals[1]["user"] as? [String: Any])?["uid"] as? String == "sandbox:\(AllEventKinds.sandbox)")

    let denials = try only("sandbox.network_denials")
    #expect(denials.allSatisfy { ids($0) == [4001, 5] && $0["action_id"] as? Int == 2 && $0["disposition_id"] as? Int == 2 })
    #expect(denials.map { ($0["dst_endpoint"] as? [String: Any])?["hostname"] as? String } == ["evil.example", "169.254.169.254"])
    #expect(denials.first?["app_name"] as? String == "/usr/bin/curl" && denials.first?["count"] as? Int == 7)

    let substitutions = try only("audit.credentials_substituted")
    #expect(substitutions.map(ids) == [[4001, 6], [4001, 6]], "one Network Activity Traffic event per key and destination")
    #expect(substitutions.allSatisfy { $0["action_id"] as? Int == 4 && $0["disposition_id"] as? Int == 1 && $0["status_id"] as? Int == 1 })
    #expect(substitutions.map { $0["count"] as? Int } == [5, 2])
    #expect(substitutions.first.flatMap { ($0["dst_endpoint"] as? [String: Any])?["hostname"] as? String } == "api.github.com")
    #expect(substitutions.last.flatMap { ($0["dst_endpoint"] as? [String: Any])?["name"] as? String } == "(other destinations)")
    #expect(substitutions.allSatisfy { ($0["unmapped"] as? [String: Any])?["credential_key"] as? String == "GITHUB_TOKEN" })
    #expect(try only("exec.started").map(ids) == [[1007, 1]])
    #expect(try only("exec.ended").map(ids) == [[1007, 2], [1007, 2]])
    #expect(try only("exec.ended").first?["exit_code"] as? Int == 3)
    #expect(try only("exec.started").first.flatMap { ($0["process"] as? [String: Any])?["cmd_line"] as? String } == "sh -c echo hi [REDACTED]")
    let disclosures = try only("audit.credentials_disclosed")
    #expect(disclosures.map(ids) == [[6003, 2], [6003, 2]])
    #expect(disclosures.last.flatMap { (($0["actor"] as? [String: Any])?["user"] as? [String: Any])?["type"] as? String } == "Sandbox")
    #expect(try only("ssh.session_created").map(ids) == [[3002, 3]])
    #expect(try only("ssh.tunnel_opened").map(ids) == [[4007, 1]])
    #expect(try only("ssh.tunnel_closed").first.flatMap { ($0["traffic"] as? [String: Any])?["bytes"] as? Int } == 30)
    let connects = try only("supervisor.connected")
    #expect(connects.map(ids) == [[3002, 1]])
    #expect((connects.first?["session"] as? [String: Any])?["uid"] as? String == "ss1")
    #expect((connects.first?["src_endpoint"] as? [String: Any])?["ip"] as? String == "10.200.0.2")
    let disconnects = try only("supervisor.disconnected")
    #expect(disconnects.map(ids) == [[3002, 2], [3002, 2]])
    #expect(disconnects.map { $0["duration"] as? Int } == [5000, 900])
    #expect(disconnects.last?["count"] as? Int == 7 && disconnects.last?["session"] == nil, "the reconnect-loop summary")
    #expect(try only("sandbox.requested").map(ids) == [[6003, 1]])
    #expect(try only("provider.updated").map(ids) == [[6003, 3]])
    #expect(try only("provider.deleted").map(ids) == [[6003, 4]])
    #expect(try only("sandbox.ready").map(ids) == [[6003, 99]])
    #expect(try only("sandbox.failed").first?["status_id"] as? Int == 2)
    let admin = try #require(try only("sandbox.requested").first.flatMap { ($0["actor"] as? [String: Any])?["user"] as? [String: Any] })
    #expect(admin["name"] as? String == "openshell-operator" && admin["type_id"] as? Int == 2)
    #expect(events.allSatisfy { ($0.json["metadata"] as? [String: Any])?["sequence"] is Int })

    // Canary: the sealed credential bytes never reach an OCSF event.
    for e in events { #expect(!e.line.contains(canary), "\(e.type) holds the secret") }
    #expect(events.contains { $0.line.contains("GITHUB_TOKEN") })

    let result = try Self.validate(events.map(\.line), requireClasses: "1007,3002,3003,4001,4007,6003")
    #expect(result.code == 0, "\(result.out)")
    #expect(result.out.contains("\(events.count) events, \(events.count) valid, 0 invalid"), "\(result.out)")
  }

  /// The fixture logs (the scripted scenarios) export as valid OCSF too.
  @Test(arguments: Scenarios.all.map(\.name))
  func fixtureLogsExportValidOCSF(name: String) throws {
    let log = try openReadOnly(fixtureCopy(name))
    defer { log.close() }
    let lines = try Self.ocsfLines(log).map(\.line)
    #expect(lines.count >= Int(log.headSeq))
    let result = try Self.validate(lines)
    #expect(result.code == 0, "\(result.out)")
  }

  /// The validator is not a rubber stamp: an unknown field, a wrong type, an id outside its enum and an
  /// inconsistent type_uid are each refused.
  @Test func theValidatorRefusesBrokenEvents() async throws {
    let dir = temporaryDirectory("ocsf-broken")
    let log = try await AllEventKinds.writeLog(dir, canary: "c")
    defer { log.close() }
    let good = try #require(try Self.ocsfLines(log).first { $0.type == "exec.started" }?.json)
    var unknownField = good; unknownField["secret_value"] = "x"
    var wrongType = good; wrongType["time"] = "yesterday"
    var badEnum = good; badEnum["activity_id"] = 42; badEnum["type_uid"] = 100_742
    var badTypeUID = good; badTypeUID["type_uid"] = 100_799
    for (label, broken) in [("unknown field", unknownField), ("wrong type", wrongType), ("enum", badEnum), ("type_uid", badTypeUID)] {
      let result = try Self.validate([OCSF.encode(good), OCSF.encode(broken)])
      #expect(result.code != 0 && result.out.contains("1 invalid"), "\(label): \(result.out)")
    }
  }
}
