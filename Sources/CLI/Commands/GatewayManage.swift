import ArgumentParser
import Foundation
import Yams

/// `openshell gateway stop`
struct GatewayStop: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop a local gateway daemon (its data is kept).")
  @OptionGroup var global: GatewayOptions
  @Option(help: "Gateway name (default: -g, $OPENSHELL_GATEWAY, the active gateway, else 'openshell').") var name: String?
  @Option(help: "Seconds to wait for a graceful shutdown before SIGKILL.") var timeout: Double = 20

  func run() async throws {
    try await cliRun {
      let name = global.name(self.name)
      if let m = ClientRegistry.default.metadata(name), m.ssh != nil {
        try await LocalGateway(name: name).withLifecycleLock { try RemoteOperations.stop(m, timeout: timeout) }
        return
      }
      if let m = ClientRegistry.default.metadata(name), m.type != "local" {
        throw CLIError("gateway '\(name)' is a \(m.type) registration; it is not managed from this machine")
      }
      let gw = ClientRegistry.default.metadata(name).map(LocalGateway.init(metadata:)) ?? LocalGateway(name: name)
      guard gw.exists || ClientRegistry.default.metadata(name) != nil else {
        throw ClientRegistry.default.unknownGateway(name)
      }
      if let owner = gw.owner, owner != name {
        throw CLIError("gateway '\(name)' is a registration of the local gateway '\(owner)'; stop it with: openshell gateway stop --name \(owner)")
      }
      try await gw.withLifecycleLock {
        if gw.runningPID == nil, case .stale(let pid) = gw.processState {
          gw.removePIDFile()
          print("Gateway \(name) is not running (removed stale pid file naming pid \(pid)).")
          return
        }
        guard let pid = gw.runningPID else {
          print("Gateway \(name) is not running.")
          return
        }
        print("• Stopping gateway \(name) (pid \(pid))...")
        let r = DaemonControl.stop(gw, timeout: timeout)
        print("\(Style.check) Gateway \(name) stopped\(r.killed ? " (killed after \(Int(timeout)) s)" : "").")
      }
    }
  }
}

/// `openshell gateway destroy`
struct GatewayDestroy: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "destroy",
    abstract: "Stop a gateway, remove its registration and move its data dir to the archive.")
  @OptionGroup var global: GatewayOptions
  @Option(help: "Gateway name (default: -g, $OPENSHELL_GATEWAY, the active gateway, else 'openshell').") var name: String?
  @Flag(name: [.short, .long], help: "Do not ask for confirmation (required when stdin is not a terminal).") var yes = false
  @Flag(help: "For a gateway deployed with --remote: remove only this machine's registration, do not contact the host.")
  var keepRemote = false

  func run() async throws {
    try await cliRun {
      let registry = ClientRegistry.default
      let name = global.name(self.name)
      let meta = registry.metadata(name)
      let gw = meta.map(LocalGateway.init(metadata:)) ?? LocalGateway(name: name)
      let local = meta == nil || meta?.type == "local"
      guard meta != nil || gw.exists else { throw CLIError("unknown gateway '\(name)'") }
      if !yes {
        guard stdinIsTerminal else {
          throw CLIError("refusing to destroy gateway '\(name)' without confirmation; pass --yes")
        }
        let what =
          meta?.ssh != nil && !keepRemote
          ? "It is stopped on \(meta!.ssh!.destination) and its data dir there is moved to the host's archive. "
          : local ? "It is stopped and its data dir is moved to the archive. " : ""
        print("Destroy gateway '\(name)'? \(what)[y/N] ", terminator: "")
        fflush(nil)
        guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
          throw CLIError("destroy of gateway '\(name)' cancelled")
        }
      }
      if let m = meta, m.ssh != nil {
        try await LocalGateway(name: name).withLifecycleLock { try RemoteOperations.destroy(m, keepRemote: keepRemote) }
        return
      }
      guard local else {
        try registry.remove(name)
        print("Gateway registration \(name) removed.")
        return
      }
      // A registration added for another local gateway (`gateway add --local`) shares that gateway's data
      // dir: destroying the registration must not stop or archive the other gateway.
      if let owner = gw.owner, owner != name {
        try registry.remove(name)
        print("Gateway registration \(name) removed (the local gateway '\(owner)' it pointed to is untouched).")
        return
      }
      print("• Destroying gateway \(name)...")
      let archived: URL? = try await gw.withLifecycleLock {
        _ = DaemonControl.stop(gw)
        return gw.exists ? try gw.archive(suffix: "-destroyed") : nil
      }
      try registry.remove(name)
      print("\(Style.check) Gateway \(name) destroyed.")
      if let archived {
        print("Its data was archived to \(archived.path)")
        print("Audit it: openshell-replay audit \(archived.appendingPathComponent("log").path)")
      }
    }
  }
}

/// `openshell gateway select [NAME]`
struct GatewaySelect: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "select", abstract: "Set the active gateway, or list gateways.")
  @OptionGroup var global: GatewayOptions
  @OptionGroup var out: OutputOptions
  @Argument(help: "Gateway to make active.") var name: String?

  func run() async throws {
    try await cliRun {
      let registry = ClientRegistry.default
      if let name {
        guard registry.metadata(name) != nil else {
          throw ClientRegistry.default.unknownGateway(name)
        }
        try registry.setActive(name)
        print("\(Style.check) Active gateway set to '\(name)'")
        return
      }
      let all = registry.all()
      let active = registry.active
      if stdinIsTerminal && stdoutIsTerminal && out.output == .table && !all.isEmpty {
        for (i, m) in all.enumerated() {
          print("\(m.name == active ? Style.green("*") : " ") \(i + 1)) \(m.name)  \(Style.dim(m.gateway_endpoint))")
        }
        print("Select a gateway [1-\(all.count)] (Enter keeps the current one): ", terminator: "")
        fflush(nil)
        guard let line = readLine(), !line.trimmingCharacters(in: .whitespaces).isEmpty else { return }
        guard let n = Int(line.trimmingCharacters(in: .whitespaces)), (1...all.count).contains(n) else {
          throw CLIError("not a choice: \(line)")
        }
        try registry.setActive(all[n - 1].name)
        print("\(Style.check) Active gateway set to '\(all[n - 1].name)'")
        return
      }
      switch out.output {
      case .table:
        if all.isEmpty {
          print("No gateways found.")
          print("Deploy one with: openshell gateway start")
          return
        }
        let rows = all.map { m in
          [(m.name == active ? "*" : " ") + " " + m.name, m.gateway_endpoint, m.type, m.auth_mode]
        }
        print(renderTable(header: ["  NAME", "ENDPOINT", "TYPE", "AUTH"], rows: rows))
        print("")
        print("* active gateway. Switch with: openshell gateway select <name>")
      case .json, .yaml:
        let list = all.map { m in
          ["name": m.name, "endpoint": m.gateway_endpoint, "type": m.type, "auth": m.auth_mode, "active": m.name == active] as [String: Any]
        }
        let obj: [String: Any] = ["active": active as Any? ?? NSNull(), "gateways": list]
        print(out.output == .json ? try jsonString(obj) : try yamlString(obj))
      }
    }
  }
}

/// `openshell gateway info`
struct GatewayInfo: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "info", abstract: "Show a gateway's registration and local state (no network).")
  @OptionGroup var global: GatewayOptions
  @OptionGroup var out: OutputOptions
  @Option(help: "Gateway name (default: -g, $OPENSHELL_GATEWAY, the active gateway).") var name: String?

  func run() async throws {
    try await cliRun {
      let registry = ClientRegistry.default
      guard let name = self.name ?? global.explicitName ?? registry.active else {
        throw CLIError("no active gateway; set one with 'openshell gateway select <name>' or deploy one with 'openshell gateway start'")
      }
      let meta = registry.metadata(name)
      let gw = meta.map(LocalGateway.init(metadata:)) ?? LocalGateway(name: name)
      guard meta != nil || gw.exists else {
        throw ClientRegistry.default.unknownGateway(name)
      }
      let config = gw.launchConfig
      let caPath = meta != nil ? registry.mtlsDir(name).appendingPathComponent("ca.crt").path : gw.pki("ca.crt")
      let ca = try? CertInfo.load(caPath)
      var state = "-"
      var pid: Int32?
      if meta?.type ?? "local" == "local" {
        switch gw.processState {
        case .running(let p): state = "running"; pid = p
        case .stale(let p): state = "stopped (stale pid file: \(p))"
        case .stopped: state = gw.exists ? "stopped" : "no local data"
        }
      }
      let record = Record(pairs: [
        ("Gateway", name),
        ("Endpoint", meta?.gateway_endpoint ?? config?.endpoint),
        ("Type", meta?.type ?? "local"),
        ("Remote host", meta?.remote_host),
        ("Resolved host", meta?.resolved_host),
        ("SSH tunnel", meta?.ssh.map { $0.tunnel ? "127.0.0.1:\($0.tunnel_local_port ?? 0) → \(meta!.resolved_host ?? "host"):\(meta!.gateway_port)" : "no" }),
        ("Installed", meta?.ssh.map { $0.openshell_path }),
        ("Auth mode", meta?.auth_mode ?? config?.authMode),
        ("Port", meta?.gateway_port ?? config?.port),
        ("Active", registry.active == name),
        ("Registered", meta != nil),
        ("Data dir", meta?.type ?? "local" == "local" ? gw.dataDir.path : nil),
        ("Log file", meta?.type ?? "local" == "local" ? gw.logFile.path : nil),
        ("State", state),
        ("PID", pid.map { Int($0) }),
        ("GPU", config?.gpu),
        ("Registry user", config?.registryUsername),
        ("CA fingerprint", ca?.fingerprint),
        ("CA expires", ca.map { iso8601($0.notAfter) }),
      ])
      print(try record.render(out.output, title: "Gateway Info"))
    }
  }
}

func yamlString(_ obj: Any) throws -> String {
  try Yams.dump(object: obj, sortKeys: true).trimmingCharacters(in: .newlines)
}
