// `openshell settings get|set|delete [--global]`: gateway and sandbox settings through UpdateConfig.

import ArgumentParser
import OpenShellAPI

/// `openshell settings get|set|delete [--global]`.
struct SettingsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "settings", abstract: "Show and change gateway and sandbox settings.",
    subcommands: [SettingsGet.self, SettingsSet.self, SettingsDelete.self])
}

struct SettingsGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "get", abstract: "Show the effective settings of a sandbox, or the global settings.")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Flag(name: .customLong("global"), help: "Gateway-wide settings.") var isGlobal = false
  @Flag(help: "Print JSON.") var json = false
  @Option(help: "Workspace.") var workspace = "default"

  static func text(_ v: Openshell_Sandbox_V1_SettingValue) -> Any {
    switch v.value {
    case .boolValue(let b)?: return b
    case .intValue(let i)?: return i
    case .stringValue(let s)?: return s
    case .bytesValue(let d)?: return "<\(d.count) bytes>"
    case nil: return ""
    }
  }

  func run() async throws {
    try await PolicyCLI.run {
      let r = try global.resolve()
      var rows: [(key: String, value: Any, scope: String)] = []
      var revision: UInt64 = 0
      if isGlobal {
        let g = try await PolicyCLI.withClients(r.target) { c, _ in try await c.getGatewayConfig(.init(), options: SandboxCLI.options()) }
        rows = g.settings.map { ($0.key, Self.text($0.value), "global") }
        revision = g.settingsRevision
      } else {
        let n = try SandboxCLI.name(name, gateway: r.name)
        let s = try await PolicyCLI.withClients(r.target) { c, _ in
          try await c.getSandboxConfig(
            .with {
              $0.name = n; $0.workspaceScope = SandboxCLI.scope(workspace)
            }, options: SandboxCLI.options())
        }
        rows = s.settings.map { ($0.key, Self.text($0.value.value), $0.value.scope == .global ? "global" : "sandbox") }
        revision = s.settingsRevision
      }
      rows.sort { $0.key < $1.key }
      if json {
        print(
          try jsonString(["settings": Dictionary(uniqueKeysWithValues: rows.map { ($0.key, ["value": $0.value, "scope": $0.scope]) }), "revision": revision]))
        return
      }
      guard !rows.isEmpty else {
        print("No settings.")
        return
      }
      print(renderTable(header: ["KEY", "VALUE", "SCOPE"], rows: rows.map { [$0.key, "\($0.value)", $0.scope] }))
    }
  }
}

/// One settings change through UpdateConfig, for a sandbox (default: the last used) or, with
/// `isGlobal`, the whole gateway (after confirmation). Returns the response and the sandbox name ("" if global).
func updateSetting(
  _ global: GatewayOptions, name: String?, isGlobal: Bool, workspace: String, key: String, yes: Bool,
  confirm: (String) -> String, _ change: @escaping @Sendable (inout Openshell_V1_UpdateConfigRequest) -> Void
) async throws -> (Openshell_V1_UpdateConfigResponse, String) {
  let r = try global.resolve()
  if isGlobal { try PolicyCLI.confirm(confirm(r.name), yes: yes) }
  let n = isGlobal ? "" : try SandboxCLI.name(name, gateway: r.name)
  let resp = try await PolicyCLI.withClients(r.target) { c, _ in
    try await c.updateConfig(
      .with {
        $0.sandbox = n
        $0.global = isGlobal
        $0.settingKey = key
        $0.workspaceScope = SandboxCLI.scope(workspace)
        change(&$0)
      }, options: SandboxCLI.options())
  }
  return (resp, n)
}

struct SettingsSet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "set", abstract: "Set a setting (bools accept 1/true/yes/y/on and 0/false/no/n/off).")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Setting key.") var key: String
  @Option(help: "Value.") var value: String
  @Flag(name: .customLong("global"), help: "Set it gateway-wide.") var isGlobal = false
  @Flag(help: "Do not ask for confirmation (--global).") var yes = false
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await PolicyCLI.run {
      let value = self.value
      let (resp, n) = try await updateSetting(
        global, name: name, isGlobal: isGlobal, workspace: workspace, key: key, yes: yes,
        confirm: { "Set '\(key)' for every sandbox on gateway '\($0)'?" }
      ) { $0.settingValue = .with { $0.stringValue = value } }
      print("\(Style.check) Setting \(key) set (\(isGlobal ? "global" : "sandbox \(n)"), settings revision: \(resp.settingsRevision))")
    }
  }
}

struct SettingsDelete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a setting.")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Setting key.") var key: String
  @Flag(name: .customLong("global"), help: "Delete the gateway-wide value.") var isGlobal = false
  @Flag(help: "Do not ask for confirmation (--global).") var yes = false
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await PolicyCLI.run {
      let (resp, _) = try await updateSetting(
        global, name: name, isGlobal: isGlobal, workspace: workspace, key: key, yes: yes,
        confirm: { _ in "Delete the global setting '\(key)'?" }
      ) { $0.deleteSetting = true }
      print(resp.deleted ? "\(Style.check) Setting \(key) deleted" : "· Setting \(key) was not set")
    }
  }
}
