import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import LogTools
import OpenShellAPI

/// `openshell audit [--sandbox N] [--provider N] [--actor A] [--type T] [--since 1h] [--until …]
/// [--follow] [-o table|json|jsonl|ocsf]`: the audit trail of the active gateway, read through its audit API
/// (`openshell.audit.v1.AuditService`, operator identity). The same lines as `openshell-replay audit`
/// on the gateway's data directory; secrets are never in them. `-o ocsf` prints OCSF 1.5.0 events, one JSON
/// object a line (docs/audit-ocsf.md).
struct AuditCLI: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "audit", abstract: "The gateway's audit trail: who did what, who was refused, who read which secret.",
    subcommands: [AuditShow.self, AuditVerify.self], defaultSubcommand: AuditShow.self)

  /// Runs `body` with a client of the gateway's audit API (`openshell.audit.v1.AuditService`).
  static func withAudit<R: Sendable>(
    _ t: Target, _ body: @Sendable (Openshell_Audit_V1_AuditService.Client<HTTP2ClientTransport.Posix>) async throws -> R
  ) async throws -> R {
    try await GatewayClient.withConnection(t) { client in try await body(Openshell_Audit_V1_AuditService.Client(wrapping: client)) }
  }

  /// Runs an audit command's `body`; when the gateway cannot be reached (stopped, unreachable, or gone
  /// mid-call) the one-line error also names the offline tool that reads the same log without it:
  /// `openshell-replay <replay arguments>` on the gateway's log directory (`DATA/log`).
  static func offlineOnFailure(
    _ gateway: GatewayOptions.Resolved, replay command: String, _ arguments: [String], _ body: () async throws -> Void
  ) async throws {
    do {
      try await body()
    } catch let e as RPCError where connectionFailure(e) != nil || streamClosed(e) {
      throw CLIError(describe(e) + "; " + offlineHint(gateway, command, arguments))
    }
  }

  /// The offline alternative in words: a local gateway's own log directory in a command to paste; for a
  /// remote or cloud gateway the log is on its host, so its data directory is a placeholder.
  static func offlineHint(_ gateway: GatewayOptions.Resolved, _ command: String, _ arguments: [String]) -> String {
    let rest = arguments.isEmpty ? "" : " " + arguments.map(shellQuote).joined(separator: " ")
    if let m = gateway.metadata, m.type == "local" {
      let local = LocalGateway(metadata: m)
      if local.hasLog { return "or read its log offline: openshell-replay \(command) \(shellQuote(local.logDir.path))\(rest)" }
    }
    return "or read its log offline on the gateway's host: openshell-replay \(command) DATA/log\(rest)"
  }
}

/// `openshell audit [show] …`: the events, filtered, as a table, JSON or JSON lines; `-f` follows.
struct AuditShow: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "show", abstract: "Show the audit trail (the default: `openshell audit --since 1h` is `openshell audit show --since 1h`).")
  @OptionGroup var global: GatewayOptions
  @Option(help: "Only events of this sandbox (name or id; deleted sandboxes included).") var sandbox: String?
  @Option(help: "Only events of this provider (name or id).") var provider: String?
  @Option(help: "Only events by this actor (exact, or part of it).") var actor: String?
  @Option(help: "Only this event type (repeatable; a family prefix ending in '.', e.g. audit.).") var type: [String] = []
  @Option(help: "From this time (RFC 3339, or a duration ago: 90s, 5m, 1h, 2d).") var since: String?
  @Option(help: "Until this time (RFC 3339, or a duration ago).") var until: String?
  @Flag(name: .shortAndLong, help: "After the history, keep printing new events as they happen.") var follow = false
  @Option(name: .shortAndLong, help: "Output: table, json, jsonl, or ocsf (OCSF 1.5.0 events, one JSON object a line).") var output: String = "table"

  func validate() throws {
    guard ["table", "json", "jsonl", "ocsf"].contains(output) else { throw ValidationError("--output must be table, json, jsonl or ocsf (got '\(output)')") }
    if follow, output == "json" { throw ValidationError("--follow prints one event per line: use -o table or -o jsonl") }
    if let since, parseTime(since) == nil { throw ValidationError("--since expects an RFC 3339 time or a duration like 90s, 5m, 1h (got '\(since)')") }
    if let until, parseTime(until) == nil { throw ValidationError("--until expects an RFC 3339 time or a duration like 90s, 5m, 1h (got '\(until)')") }
  }

  var filter: Openshell_Audit_V1_AuditFilter {
    .with {
      $0.sandbox = sandbox ?? ""
      $0.provider = provider ?? ""
      $0.actor = actor ?? ""
      $0.types = type
      $0.sinceNs = since.flatMap { parseTime($0) } ?? 0
      $0.untilNs = until.flatMap { parseTime($0) } ?? 0
    }
  }

  /// This command's filters and output as `openshell-replay audit` options (it has no `--follow`).
  var replayFilters: [String] {
    var out: [String] = []
    for (flag, value) in [("--sandbox", sandbox), ("--provider", provider), ("--actor", actor)] {
      if let value { out += [flag, value] }
    }
    for t in type { out += ["--type", t] }
    if let since { out += ["--since", since] }
    if let until { out += ["--until", until] }
    if output != "table" { out += ["-o", output] }
    return out
  }

  func run() async throws {
    try await cliRun {
      let gateway = try global.resolve()
      try await AuditCLI.offlineOnFailure(gateway, replay: "audit", replayFilters) {
        try await AuditCLI.withAudit(gateway.target) { api in
          if follow {
            try await followEvents(api)
          } else {
            try await printHistory(api)
          }
        }
      }
    }
  }

  private func printHistory(_ api: Openshell_Audit_V1_AuditService.Client<HTTP2ClientTransport.Posix>) async throws {
    var entries: [AuditEntry] = []
    var token = ""
    repeat {
      let page = try await api.queryEvents(
        .with {
          $0.filter = filter
          $0.pageSize = 5000
          $0.pageToken = token
          $0.includeOcsf = output == "ocsf"
        }, options: GatewayClient.options(timeout: .seconds(60)))
      entries += page.events.map(Self.entry)
      if output == "jsonl" {
        for e in page.events { print(try Self.jsonLine(Self.entry(e))) }
      } else if output == "ocsf" {
        for e in page.events { for line in e.ocsf { print(line) } }
      }
      token = page.nextPageToken
    } while !token.isEmpty
    switch output {
    case "jsonl", "ocsf": break
    case "json":
      let e = JSONEncoder()
      e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
      print(String(decoding: try e.encode(entries), as: UTF8.self))
    default:
      print(Audit.table(entries))
    }
  }

  private func followEvents(_ api: Openshell_Audit_V1_AuditService.Client<HTTP2ClientTransport.Posix>) async throws {
    var options = CallOptions.defaults
    options.timeout = nil
    // Many events per message (WatchEventBatches): the history catches up at the log's read rate.
    try await api.watchEventBatches(
      .with {
        $0.filter = filter; $0.fromSeq = 0; $0.includeOcsf = output == "ocsf"
      }, options: options
    ) { response in
      for try await batch in response.messages {
        var lines: [String] = []
        lines.reserveCapacity(batch.events.count)
        for event in batch.events {
          switch output {
          case "ocsf": lines += event.ocsf
          case "jsonl": lines.append(try Self.jsonLine(Self.entry(event)))
          default: lines.append(Audit.table([Self.entry(event)]).split(separator: "\n").dropFirst().joined(separator: "\n"))
          }
        }
        if !lines.isEmpty { print(lines.joined(separator: "\n")) }
        fflush(nil)
      }
    }
  }

  static func entry(_ e: Openshell_Audit_V1_AuditEvent) -> AuditEntry {
    AuditEntry(
      seq: e.seq, time: rfc3339(ns: e.timestampNs), timestampNs: e.timestampNs, actor: e.actor, requestID: e.requestID,
      type: e.type, aggregate: e.aggregate, summary: e.summary)
  }

  static func jsonLine(_ entry: AuditEntry) throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try e.encode(entry), as: UTF8.self)
  }
}
