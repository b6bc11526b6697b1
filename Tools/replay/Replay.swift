import ArgumentParser
import EventLog
import Foundation
import LogTools
import Projections

/// `openshell-replay`: verify, rebuild, inspect, audit, export and import a gateway's event log.
@main
struct Replay: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "openshell-replay",
    abstract: "Rebuild, audit, verify or restore an OpenShell gateway from its event log.",
    discussion: "DIR is a gateway log directory (e.g. ~/.local/state/openshell/gateways/openshell/log) or an archived copy.",
    subcommands: [Verify.self, Rebuild.self, State.self, AuditCommand.self, Export.self, Import.self, Restore.self])
}

/// Opens a log for the tools, turning storage errors into one readable line.
func openLog(_ dir: String, readOnly: Bool, rawErrors: Bool = false) throws -> EventLog {
  guard FileManager.default.fileExists(atPath: dir) else { throw ToolError("no such log directory: \(dir)") }
  var options = EventLog.Options()
  options.readOnly = readOnly
  do {
    return try EventLog.open(directory: dir, options: options)
  } catch let e as EventLogError where !rawErrors {
    throw ToolError("cannot open log \(dir): \(e.message)")
  }
}

/// A failure of the tool's work (not of its arguments): one line on stderr, exit code 1.
struct ToolError: Error {
  let message: String
  init(_ message: String) { self.message = message }
}

/// Runs `body`, mapping known errors to one line on stderr and exit code 1.
func run(_ body: () throws -> Void) throws {
  do {
    try body()
  } catch let e as ToolError {
    FileHandle.standardError.write(Data("error: \(e.message)\n".utf8))
    throw ExitCode(1)
  } catch let e as EventLogError {
    // A damaged record: say how to use what precedes it (rebuild, state, audit and export take --salvage).
    let hint = e.code == .corrupt ? " (openshell-replay verify names the damage; --salvage uses the records before it)" : ""
    FileHandle.standardError.write(Data("error: \(e.message)\(hint)\n".utf8))
    throw ExitCode(1)
  } catch let e as ProjectionError {
    FileHandle.standardError.write(Data("error: \(e)\n".utf8))
    throw ExitCode(1)
  } catch let e as LogArchive.ArchiveError {
    FileHandle.standardError.write(Data("error: \(e.message)\n".utf8))
    throw ExitCode(1)
  }
}

/// `--salvage`: the last seq before the first record that fails verification (nil = use everything: the
/// whole log verifies, or salvage is off). What is kept and what is left out is reported on stderr.
func salvageLimit(_ log: EventLog, _ enabled: Bool) throws -> UInt64? {
  guard enabled else { return nil }
  let report = try log.verify()
  guard let bad = report.firstBad else {
    FileHandle.standardError.write(Data("salvage: all \(report.records) records verify; nothing left out\n".utf8))
    return nil
  }
  let keep = bad.seq > report.lastSeq ? report.lastSeq : bad.seq - 1
  let head = max(report.headSeq, bad.seq)
  FileHandle.standardError.write(
    Data(
      "salvage: using records 1...\(keep), which verify; left out seq \(keep + 1)...\(head) (\(head - keep) records) after the first bad record: seq \(bad.seq): \(bad.reason)\n"
        .utf8))
  return keep
}

func parsePoint(_ at: String?, to: UInt64?) throws -> ReplayPoint {
  if let to { return .seq(to) }
  guard let at else { return .head }
  if let seq = UInt64(at) { return .seq(seq) }
  guard let ns = parseTime(at) else { throw ValidationError("--at takes a seq, an RFC 3339 time or a duration ago like 5m: \(at)") }
  return .time(ns)
}

struct Rebuild: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Recompute the projections from the log and write a fresh snapshot.")
  @Argument(help: "Log directory.") var dir: String
  @Option(help: "Stop at this seq.") var to: UInt64?
  @Option(help: "Stop at this time (RFC 3339 or a duration ago, e.g. 10m).") var at: String?
  @Flag(help: "Use only the records before the first one that fails verification (reported on stderr).") var salvage = false

  func run() throws {
    try LogTools_run {
      var point = try parsePoint(at, to: to)
      // Rebuild writes a snapshot into an existing log; it never creates one.
      guard FileManager.default.fileExists(atPath: dir + "/data.mdb") else { throw ToolError("no event log at \(dir) (data.mdb missing)") }
      let log = try openLog(dir, readOnly: false)
      defer { log.close() }
      if let keep = try salvageLimit(log, salvage) { point = try clamp(point, keep) }
      let state = try StateLoader.replay(log, through: point, progress: ProgressBar(label: "rebuild").callback)
      try log.saveSnapshot(name: SnapshotCodec.projectionName, seq: state.lastSeq, bytes: SnapshotCodec.encode(state))
      print("snapshot written at seq \(state.lastSeq) (\(state.sandboxes.count) sandboxes, \(state.providers.count) providers)")
    }
  }
}

struct State: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Print the projected state at a point in the log (secrets redacted).")
  @Argument(help: "Log directory.") var dir: String
  @Option(help: "A seq, an RFC 3339 time, or a duration ago (5m).") var at: String?
  @Option(name: .shortAndLong, help: "Output: json or yaml.") var output: String = "json"
  @Flag(help: "Use only the records before the first one that fails verification (reported on stderr).") var salvage = false

  func run() throws {
    try LogTools_run {
      guard ["json", "yaml"].contains(output) else { throw ValidationError("--output must be json or yaml") }
      let log = try openLog(dir, readOnly: true)
      defer { log.close() }
      var point = try parsePoint(at, to: nil)
      // As `openshell sandbox get --at`: a seq past the head is refused, never silently taken as the head.
      if case .seq(let s) = point, s > log.headSeq {
        throw ToolError("seq \(s) is beyond the head of the log (seq \(log.headSeq))")
      }
      if let keep = try salvageLimit(log, salvage) { point = try clamp(point, keep) }
      let state = try StateLoader.replay(log, through: point, progress: ProgressBar(label: "replay").callback)
      let view = StateView(state)
      print(output == "yaml" ? try view.yaml() : view.json())
    }
  }
}

struct AuditCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "audit", abstract: "A readable timeline of who did what, with secrets redacted.")
  @Argument(help: "Log directory.") var dir: String
  @Option(help: "Only events of this sandbox (name or id).") var sandbox: String?
  @Option(help: "Only events of this provider (name or id).") var provider: String?
  @Option(help: "Only events by this actor.") var actor: String?
  @Option(help: "Only this event type (repeatable; a prefix ending in '.' matches a family).") var type: [String] = []
  @Option(help: "From this time (RFC 3339 or a duration ago).") var since: String?
  @Option(help: "Until this time (RFC 3339 or a duration ago).") var until: String?
  @Option(name: .shortAndLong, help: "Output: table, json, jsonl, or ocsf (OCSF 1.5.0 events, one JSON object a line; docs/audit-ocsf.md).") var output:
    String = "table"
  @Flag(help: "Use only the records before the first one that fails verification (reported on stderr).") var salvage = false

  func run() throws {
    try LogTools_run {
      guard ["table", "json", "jsonl", "ocsf"].contains(output) else { throw ValidationError("--output must be table, json, jsonl or ocsf") }
      var q = AuditQuery()
      q.sandbox = sandbox
      q.provider = provider
      q.actor = actor
      q.types = type
      if let since { guard let ns = parseTime(since) else { throw ValidationError("bad --since: \(since)") }; q.sinceNs = ns }
      if let until { guard let ns = parseTime(until) else { throw ValidationError("bad --until: \(until)") }; q.untilNs = ns }
      let log = try openLog(dir, readOnly: true)
      defer { log.close() }
      q.throughSeq = try salvageLimit(log, salvage)
      let entries: [AuditEntry]
      do {
        entries = try Audit.timeline(log, query: q, ocsf: output == "ocsf", requireKnownNames: true)
      } catch let unknown as AuditUnknownName {
        throw ToolError(unknown.description)
      }
      let e = JSONEncoder()
      e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
      switch output {
      case "json":
        e.outputFormatting.insert(.prettyPrinted)
        print(String(decoding: try e.encode(entries), as: UTF8.self))
      case "jsonl":
        for entry in entries { print(String(decoding: try e.encode(entry), as: UTF8.self)) }
      case "ocsf":
        for entry in entries { for line in entry.ocsf ?? [] { print(line) } }
      default:
        print(Audit.table(entries))
      }
    }
  }
}

struct Export: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Write a portable, verifiable archive of a log.")
  @Argument(help: "Log directory.") var dir: String
  @Argument(help: "Archive file to write.") var file: String
  @Flag(help: "Export only the records before the first one that fails verification (reported on stderr); the archive imports and restores.") var salvage =
    false
  @Flag(help: "Replace an existing archive file.") var force = false

  func run() throws {
    try LogTools_run {
      let log = try openLog(dir, readOnly: true)
      defer { log.close() }
      let keep = try salvageLimit(log, salvage)
      let n = try LogArchive.export(log, to: file, through: keep, overwrite: force, progress: ProgressBar(label: "export").callback)
      print("exported \(n) records to \(file)")
    }
  }
}

struct Import: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Create a log directory from an archive, checking every hash.")
  @Argument(help: "Archive file.") var file: String
  @Argument(help: "New log directory.") var dir: String

  func run() throws {
    try LogTools_run {
      let head = try LogArchive.importArchive(from: file, into: dir, progress: ProgressBar(label: "import").callback)
      print("imported \(head) records into \(dir)")
    }
  }
}

/// The earlier of `point` and seq `keep` (a time point is refused with `--salvage`: give a seq instead).
func clamp(_ point: ReplayPoint, _ keep: UInt64) throws -> ReplayPoint {
  switch point {
  case .seq(let s): return .seq(min(s, keep))
  case .time: throw ToolError("--salvage takes a seq with --at/--to, not a time (the log is damaged after seq \(keep))")
  case .head: return .seq(keep)
  }
}

// `run` is shadowed inside commands by their own `run()`; keep a distinct name for the helper.
func LogTools_run(_ body: () throws -> Void) throws { try run(body) }
