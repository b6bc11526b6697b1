import ArgumentParser
import EventLog
import Foundation
import LogTools

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell doctor`: diagnose a local gateway (hidden from the root help, alias `dr`).
struct Doctor: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Diagnose a gateway: its log, its environment, prerequisites (logs and exec also on a --remote host, over SSH).",
    shouldDisplay: false,
    subcommands: [DoctorLogs.self, DoctorExec.self, DoctorCheck.self],
    aliases: ["dr"])
}

/// The local gateway named by `--name`, `-g`, `$OPENSHELL_GATEWAY` or the active gateway.
func localGateway(_ global: GatewayOptions, _ flag: String?) throws -> (LocalGateway, GatewayMetadata?) {
  let registry = ClientRegistry.default
  let name = global.name(flag)
  let meta = registry.metadata(name)
  if let m = meta, m.type != "local" {
    throw CLIError("gateway '\(name)' is a \(m.type) registration; doctor works on local gateways only")
  }
  let gw = meta.map(LocalGateway.init(metadata:)) ?? LocalGateway(name: name)
  guard gw.exists else { throw CLIError("gateway '\(name)' has no local data dir (\(gw.dataDir.path)); start it with: openshell gateway start --name \(name)") }
  return (gw, meta)
}

struct DoctorLogs: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print the gateway daemon's log.")
  @OptionGroup var global: GatewayOptions
  @Option(help: "Gateway name.") var name: String?
  @Option(name: [.short, .long], help: "Only the last N lines.") var lines: Int?
  @Flag(help: "Keep printing new lines as they are written (Ctrl-C to stop).") var tail = false

  func run() async throws {
    try await cliRun {
      if let lines, lines < 0 { throw CLIError("--lines must be >= 0") }
      if let m = ClientRegistry.default.metadata(global.name(name)), m.ssh != nil {
        let code = try RemoteOperations.logs(m, lines: lines, tail: tail)
        if code != 0 { throw ExitCode(code) }
        return
      }
      let (gw, _) = try localGateway(global, name)
      guard let handle = FileHandle(forReadingAtPath: gw.logFile.path) else {
        throw CLIError("no daemon log yet at \(gw.logFile.path)")
      }
      defer { try? handle.close() }
      let data = handle.readDataToEndOfFile()
      var text = String(decoding: data, as: UTF8.self)
      // --tail without --lines shows the last 10 lines first, as tail -f does.
      let wanted = lines ?? (tail ? 10 : nil)
      if let n = wanted {
        let all = text.split(separator: "\n", omittingEmptySubsequences: false)
        let trimmed = all.last == "" ? all.dropLast() : all[...]
        text = trimmed.suffix(n).joined(separator: "\n") + (n > 0 && !trimmed.isEmpty ? "\n" : "")
      }
      FileHandle.standardOutput.write(Data(text.utf8))
      guard tail else { return }
      // On stderr, so that piping the log keeps only log lines.
      FileHandle.standardError.write(Data(Style.dim("… following \(gw.logFile.path) (Ctrl-C to stop)\n").utf8))
      signal(SIGINT, SIG_DFL)
      while true {
        let more = handle.readDataToEndOfFile()
        if !more.isEmpty { FileHandle.standardOutput.write(more) }
        try await Task.sleep(for: .milliseconds(200))
      }
    }
  }
}

struct DoctorExec: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "exec",
    abstract: "Run a command in the gateway's environment (data dir as working dir, OPENSHELL_* variables, certificates).")
  @OptionGroup var global: GatewayOptions
  @Option(help: "Gateway name.") var name: String?
  @Argument(parsing: .postTerminator, help: "The command, after --.") var command: [String] = []

  func run() async throws {
    try await cliRun {
      guard !command.isEmpty else { throw CLIError("no command given; usage: openshell doctor exec [--name N] -- CMD [ARGS...]") }
      if let m = ClientRegistry.default.metadata(global.name(name)), m.ssh != nil {
        let code = try RemoteOperations.exec(m, command: command)
        if code != 0 { throw ExitCode(code) }
        return
      }
      let (gw, meta) = try localGateway(global, name)
      let environment = ProcessInfo.processInfo.environment.merging(
        gw.environment(endpoint: meta?.gateway_endpoint ?? gw.launchConfig?.endpoint)
      ) { _, new in new }
      let code = try await ChildProcess.run("/usr/bin/env", command, environment: environment, workingDirectory: gw.dataDir.path)
      if code != 0 { throw ExitCode(code) }
    }
  }
}

struct DoctorCheck: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "check", abstract: "Check prerequisites and the gateway's files.")
  @OptionGroup var global: GatewayOptions
  @OptionGroup var out: OutputOptions
  @Option(help: "Gateway name.") var name: String?

  struct Check { var name: String; var ok: Bool; var detail: String }

  func run() async throws {
    try await cliRun {
      let registry = ClientRegistry.default
      let name = global.name(self.name)
      let meta = registry.metadata(name)
      if let m = meta, m.ssh != nil {
        let code = try RemoteOperations.check(m, output: out.output)
        if code != 0 { throw ExitCode(code) }
        return
      }
      let gw = meta.flatMap { $0.type == "local" ? LocalGateway(metadata: $0) : nil } ?? LocalGateway(name: name)
      var checks: [Check] = []
      checks.append(libraries())
      checks.append(dataDirWritable(gw))
      checks.append(port(gw, meta))
      checks.append(contentsOf: certificates(gw, meta, registry))
      checks.append(logVerifies(gw))
      let failed = checks.filter { !$0.ok }
      switch out.output {
      case .table:
        print("Gateway \(name) (\(gw.dataDir.path))")
        for c in checks {
          let label = (c.name + " ").padding(toLength: 22, withPad: ".", startingAt: 0)
          print("\(label) \(c.ok ? Style.green("ok") : Style.red("FAILED")) (\(c.detail))")
        }
        print(failed.isEmpty ? "All checks passed." : "\(failed.count) check(s) failed.")
      case .json, .yaml:
        let obj: [String: Any] = [
          "gateway": name, "ok": failed.isEmpty,
          "checks": checks.map { ["name": $0.name, "ok": $0.ok, "detail": $0.detail] as [String: Any] },
        ]
        print(out.output == .json ? try jsonString(obj) : try yamlString(obj))
      }
      if !failed.isEmpty { throw ExitCode(1) }
    }
  }

  private func libraries() -> Check {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("openshell-doctor-\(getpid())")
    defer { try? FileManager.default.removeItem(at: dir) }
    do {
      let log = try EventLog.open(directory: dir.path)
      defer { log.close() }
      let payload = Array(repeating: UInt8(ascii: "x"), count: 4096)
      _ = try log.appendSync([
        NewEvent(
          type: "doctor.check", aggregate: AggregateRef(kind: "doctor", id: "1"), actor: "doctor",
          requestID: "", payloadVersion: 1, payload: payload, timestampNs: nil)
      ])
      guard let r = try log.records(from: 1, through: 1).first, r.payload == payload else {
        return Check(name: "LMDB + zstd", ok: false, detail: "read back differs")
      }
      return Check(name: "LMDB + zstd", ok: true, detail: "a scratch log was written, compressed and read back")
    } catch let e as EventLogError {
      return Check(name: "LMDB + zstd", ok: false, detail: e.message)
    } catch {
      return Check(name: "LMDB + zstd", ok: false, detail: "\(error)")
    }
  }

  private func dataDirWritable(_ gw: LocalGateway) -> Check {
    var dir = gw.dataDir
    while !FileManager.default.fileExists(atPath: dir.path) && dir.path != "/" { dir.deleteLastPathComponent() }
    let probe = dir.appendingPathComponent(".doctor-\(getpid())")
    if FileManager.default.createFile(atPath: probe.path, contents: Data("x".utf8)) {
      try? FileManager.default.removeItem(at: probe)
      return Check(name: "Data dir", ok: true, detail: "\(dir.path) is writable")
    }
    return Check(name: "Data dir", ok: false, detail: "cannot write in \(dir.path)")
  }

  private func port(_ gw: LocalGateway, _ meta: GatewayMetadata?) -> Check {
    guard let c = gw.launchConfig else {
      let free = ProcessTable.portIsFree(8080)
      return Check(
        name: "Port", ok: free,
        detail: free
          ? "default port 8080 is free" : "default port 8080 is in use" + (ProcessTable.listener(port: 8080).map { " by \(ProcessTable.describe($0))" } ?? ""))
    }
    if let pid = gw.runningPID {
      return Check(name: "Port", ok: true, detail: "\(c.port) is served by this gateway (pid \(pid))")
    }
    if ProcessTable.portIsFree(c.port, host: c.bind) { return Check(name: "Port", ok: true, detail: "\(c.port) is free") }
    let holder = ProcessTable.listener(port: c.port).map { " by \(ProcessTable.describe($0))" } ?? ""
    return Check(name: "Port", ok: false, detail: "\(c.port) is in use\(holder)")
  }

  private func certificates(_ gw: LocalGateway, _ meta: GatewayMetadata?, _ registry: ClientRegistry) -> [Check] {
    guard FileManager.default.fileExists(atPath: gw.pki("ca.crt")) else {
      return [Check(name: "Certificates", ok: !gw.exists || gw.launchConfig?.authMode == "plaintext", detail: "no PKI in \(gw.pkiDir.path) yet")]
    }
    do {
      let ca = try CertInfo.load(gw.pki("ca.crt"))
      var problems: [String] = []
      if !ca.validNow { problems.append("CA not valid now (expires \(iso8601(ca.notAfter)))") }
      for f in ["server.crt", "client.crt"] {
        let leaf = try CertInfo.load(gw.pki(f))
        if !leaf.validNow { problems.append("\(f) expired \(iso8601(leaf.notAfter))") }
        if !ca.signed(leaf) { problems.append("\(f) not signed by ca.crt") }
      }
      var result = [
        Check(
          name: "Certificates", ok: problems.isEmpty,
          detail: problems.isEmpty
            ? "CA \(shortFingerprint(ca.fingerprint)) valid until \(iso8601(ca.notAfter)); leaves signed and valid" : problems.joined(separator: "; "))
      ]
      if let m = meta, m.auth_mode != "plaintext" {
        let stored = try? CertInfo.load(registry.mtlsDir(m.name).appendingPathComponent("ca.crt").path)
        let same = stored?.fingerprint == ca.fingerprint
        result.append(
          Check(
            name: "Client bundle", ok: same,
            detail: same ? "registry CA matches the gateway's CA" : "registry CA differs from the gateway's; fix: openshell gateway start --name \(m.name)"))
      }
      return result
    } catch {
      return [Check(name: "Certificates", ok: false, detail: "\(error)")]
    }
  }

  private func logVerifies(_ gw: LocalGateway) -> Check {
    guard gw.hasLog else { return Check(name: "Event log", ok: !gw.exists, detail: "no log in \(gw.logDir.path) yet") }
    var options = EventLog.Options()
    options.readOnly = true
    do {
      let log = try EventLog.open(directory: gw.logDir.path, options: options)
      defer { log.close() }
      let r = try LogVerifier.verify(log)
      if r.ok { return Check(name: "Event log", ok: true, detail: "\(r.records) records verify, head seq \(r.headSeq)") }
      return Check(name: "Event log", ok: false, detail: (r.firstBadSeq.map { "seq \($0): " } ?? "") + (r.problem ?? "verification failed"))
    } catch let e as EventLogError {
      return Check(name: "Event log", ok: false, detail: e.message)
    } catch {
      return Check(name: "Event log", ok: false, detail: "\(error)")
    }
  }
}
