import ArgumentParser
import Foundation
import GRPCCore
import OpenShellAPI
import PolicyKit

/// `openshell policy set|get|list|delete` (openshell-behavior.md §1E).
struct PolicyCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "policy",
    abstract: "Manage sandbox and global policies.",
    subcommands: [PolicySet.self, PolicyGet.self, PolicyList.self, PolicyDelete.self, PolicyExampleCommand.self])
}

struct PolicySet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "set",
    abstract: "Submit a new policy revision to a sandbox (or set the global policy).",
    discussion: "With --wait: exit 0 when the supervisor loaded it, 1 when it failed to load, 124 on timeout.")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Policy YAML file.") var policy: String
  @Flag(name: .customLong("global"), help: "Set the gateway-wide policy (overrides every sandbox).") var isGlobal = false
  @Flag(help: "Wait until the sandbox reports the revision loaded or failed.") var wait = false
  @Option(help: "Seconds to wait with --wait.") var timeout: Double = 60
  @Flag(help: "Do not ask for confirmation (--global).") var yes = false
  @Option(help: "Workspace.") var workspace = "default"

  func validate() throws {
    if isGlobal && wait { throw ValidationError("--wait cannot be used with --global (global policies are not acknowledged)") }
    if isGlobal && name != nil { throw ValidationError("--global takes no sandbox name") }
  }

  func run() async throws {
    var exitCode: Int32 = 0
    try await PolicyCLI.run {
      let proposed = try PolicyCLI.load(policy)
      let r = try global.resolve()
      if isGlobal {
        try PolicyCLI.confirm("Set the global policy? It overrides the policy of every sandbox on gateway '\(r.name)'.", yes: yes)
        let resp = try await PolicyCLI.withClients(r.target) { c, _ in
          try await c.updateConfig(
            .with {
              $0.global = true; $0.policy = proposed
            }, options: SandboxCLI.options())
        }
        print("\(Style.check) Global policy configured (hash: \(resp.policyHash.prefix(12)), settings revision: \(resp.settingsRevision))")
        return
      }
      let n = try SandboxCLI.name(name, gateway: r.name)
      let scope = SandboxCLI.scope(workspace)
      exitCode = try await PolicyCLI.withClients(r.target) { c, _ in
        let before = try? await c.getSandboxPolicyStatus(
          .with {
            $0.sandbox = n; $0.workspaceScope = scope
          }, options: SandboxCLI.options())
        let resp = try await c.updateConfig(
          .with {
            $0.sandbox = n; $0.workspaceScope = scope; $0.policy = proposed
          }, options: SandboxCLI.options())
        if let before, before.revision.version == resp.version {
          print("· Policy unchanged (version \(resp.version), hash: \(resp.policyHash.prefix(12)))")
        } else {
          print("\(Style.check) Policy version \(resp.version) submitted (hash: \(resp.policyHash.prefix(12)))")
        }
        guard wait else { return 0 }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
          let s = try await c.getSandboxPolicyStatus(
            .with {
              $0.sandbox = n; $0.version = resp.version; $0.workspaceScope = scope
            }, options: SandboxCLI.options())
          switch s.revision.status {
          case .loaded:
            print("\(Style.check) Policy version \(resp.version) loaded (active version: \(s.activeVersion))")
            return 0
          case .superseded:
            print("· Policy version \(resp.version) superseded (active version: \(s.activeVersion))")
            return 0
          case .failed:
            printErr("\(Style.red("✗")) Policy version \(resp.version) failed to load: \(s.revision.loadError) (active version: \(s.activeVersion))")
            return 1
          default:
            try await Task.sleep(for: .milliseconds(100))
          }
        }
        printErr("\(Style.yellow("!")) Timed out after \(Int(timeout))s waiting for policy version \(resp.version) to load")
        return 124
      }
    }
    if exitCode != 0 { throw ExitCode(exitCode) }
  }
}

struct PolicyGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "get", abstract: "Show a policy revision (default: the latest).")
  @OptionGroup var global: GatewayOptions
  @OptionGroup var out: OutputOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Revision (0 = latest).") var rev: UInt32 = 0
  @Flag(help: "Also print the policy YAML.") var full = false
  @Flag(name: .customLong("global"), help: "The global policy.") var isGlobal = false
  @Option(help: "Workspace.") var workspace = "default"
  @Option(help: "The policy as it was at this point: a seq, an RFC 3339 time or a duration ago (5m); rebuilt from the gateway's log.")
  var at: String?

  func run() async throws {
    try await PolicyCLI.run {
      let r = try global.resolve()
      let n = isGlobal ? "" : try SandboxCLI.name(name, gateway: r.name)
      if let at {
        guard !isGlobal else { throw CLIError("--at shows a sandbox's policy; for the global policy use openshell-replay state --at on the gateway host") }
        let (seq, view) = try await PointInTime.sandbox(r.target, name: n, workspace: workspace, at: at)
        let rv = try PointInTime.revision(view, rev: rev)
        var pairs: [(String, Any?)] = [
          ("As of seq", Int(seq)), ("Version", Int(rv.version)), ("Hash", rv.sha256), ("Status", rv.status),
          ("Active", view.policy.map { Int($0.activeVersion) }), ("Message", rv.message.isEmpty ? nil : rv.message),
        ]
        if full && out.output != .table { pairs.append(("Policy", PointInTime.policyYAML(rv))) }
        print(try Record(pairs: pairs).render(out.output, title: "Policy (as of seq \(seq)):"))
        if full && out.output == .table {
          print("---")
          print(PointInTime.policyYAML(rv), terminator: "")
        }
        return
      }
      let s = try await PolicyCLI.withClients(r.target) { c, _ in
        try await c.getSandboxPolicyStatus(
          .with {
            $0.sandbox = n
            $0.version = rev
            $0.global = isGlobal
            $0.workspaceScope = SandboxCLI.scope(workspace)
          }, options: SandboxCLI.options())
      }
      let rv = s.revision
      // Tables show UTC `YYYY-MM-DD HH:MM:SS` (as `sandbox list`); JSON and YAML show RFC 3339.
      let time = { (d: Date) in out.output == .table ? utcDateTime(d) : iso8601(d) }
      var pairs: [(String, Any?)] = [
        ("Version", Int(rv.version)), ("Hash", rv.policyHash), ("Status", PolicyCLI.statusName(rv.status)),
        ("Active", Int(s.activeVersion)), ("Created", time(rv.createdTime.date)),
        ("Loaded", rv.hasLoadedTime ? time(rv.loadedTime.date) : nil), ("Error", rv.loadError.isEmpty ? nil : rv.loadError),
      ]
      if full && out.output != .table { pairs.append(("Policy", PolicyYAML.render(rv.policy))) }
      print(try Record(pairs: pairs).render(out.output, title: isGlobal ? "Global policy:" : "Policy:"))
      if full && out.output == .table {
        print("---")
        print(PolicyYAML.render(rv.policy), terminator: "")
      }
    }
  }
}

struct PolicyList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "list", abstract: "List policy revisions, newest first.", aliases: ["ls"])
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Maximum revisions to show.") var limit: Int32 = 20
  @Flag(name: .customLong("global"), help: "The global policy's revisions.") var isGlobal = false
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await PolicyCLI.run {
      let r = try global.resolve()
      let n = isGlobal ? "" : try SandboxCLI.name(name, gateway: r.name)
      let list = try await PolicyCLI.withClients(r.target) { c, _ in
        try await c.listSandboxPolicies(
          .with {
            $0.sandbox = n
            $0.pageSize = limit
            $0.global = isGlobal
            $0.workspaceScope = SandboxCLI.scope(workspace)
          }, options: SandboxCLI.options())
      }
      guard !list.revisions.isEmpty else {
        print("No policy revisions found.")
        return
      }
      print(
        renderTable(
          header: ["VERSION", "HASH", "STATUS", "CREATED", "ERROR"],
          rows: list.revisions.map {
            [String($0.version), String($0.policyHash.prefix(12)), PolicyCLI.statusName($0.status), utcDateTime($0.createdTime.date), oneLine($0.loadError)]
          }))
    }
  }
}

struct PolicyDelete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete the global policy (sandboxes return to their own policies).")
  @OptionGroup var global: GatewayOptions
  @Flag(name: .customLong("global"), help: "Required: only the global policy can be deleted.") var isGlobal = false
  @Flag(help: "Do not ask for confirmation.") var yes = false

  func validate() throws {
    if !isGlobal { throw ValidationError("policy delete requires --global (a sandbox policy is replaced with 'policy set', not deleted)") }
  }

  func run() async throws {
    try await PolicyCLI.run {
      let r = try global.resolve()
      try PolicyCLI.confirm("Delete the global policy of gateway '\(r.name)'?", yes: yes)
      let resp = try await PolicyCLI.withClients(r.target) { c, _ in
        try await c.updateConfig(
          .with {
            $0.global = true; $0.settingKey = "policy"; $0.deleteSetting = true
          }, options: SandboxCLI.options())
      }
      print(resp.deleted ? "\(Style.check) Global policy deleted" : "· No global policy was set")
    }
  }
}

// MARK: settings

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

// MARK: inference

/// `openshell inference set|update|get|delete` (openshell-behavior.md §1F).
struct InferenceCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "inference", abstract: "Configure the inference routes sandboxes reach at inference.local.",
    subcommands: [InferenceSet.self, InferenceUpdate.self, InferenceGet.self, InferenceDelete.self])

  static func route(_ system: Bool) -> String { system ? "sandbox-system" : "inference.local" }

  static func show(_ title: String, _ r: Openshell_Inference_V1_InferenceRoute, validated: [Openshell_Inference_V1_ValidatedEndpoint]? = nil) {
    var pairs: [(String, Any?)] = [
      ("Route", r.name), ("Provider", r.providerName), ("Model", r.modelID), ("Version", Int(r.version)),
      ("Timeout", r.timeoutSecs == 0 ? "60s (default)" : "\(r.timeoutSecs)s"),
    ]
    if let validated {
      pairs.append(("Validated Endpoints", validated.isEmpty ? "none (--no-verify)" : validated.map { "\($0.url) (\($0.protocol))" }.joined(separator: ", ")))
    }
    print((try? Record(pairs: pairs).render(.table, title: title)) ?? "")
  }

  static func set(_ global: GatewayOptions, system: Bool, provider: String, model: String, timeout: UInt32, noVerify: Bool, verb: String) async throws {
    let r = try global.resolve()
    let resp = try await PolicyCLI.withClients(r.target) { _, inf in
      try await inf.setInferenceRoute(
        .with {
          $0.routeName = route(system)
          $0.providerName = provider
          $0.modelID = model
          $0.timeoutSecs = timeout
          $0.noVerify = noVerify
        }, options: SandboxCLI.options(90))
    }
    show("\(system ? "System" : "Gateway") inference \(verb):", resp.route, validated: resp.validatedEndpoints)
  }
}

struct InferenceSet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "set", abstract: "Route inference.local (or, with --system, sandbox-system) to a provider and model.")
  @OptionGroup var global: GatewayOptions
  @Option(help: "Provider name (type openai, anthropic or nvidia).") var provider: String
  @Option(help: "Model id.") var model: String
  @Flag(help: "The sandbox-system route.") var system = false
  @Flag(help: "Do not probe the endpoint.") var noVerify = false
  @Option(help: "Request timeout in seconds (0 = default 60).") var timeout: UInt32 = 0

  func run() async throws {
    try await PolicyCLI.run {
      try await InferenceCommand.set(global, system: system, provider: provider, model: model, timeout: timeout, noVerify: noVerify, verb: "configured")
    }
  }
}

struct InferenceUpdate: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "update", abstract: "Change the provider, model or timeout of a configured route.")
  @OptionGroup var global: GatewayOptions
  @Option(help: "Provider name.") var provider: String?
  @Option(help: "Model id.") var model: String?
  @Flag(help: "The sandbox-system route.") var system = false
  @Flag(help: "Do not probe the endpoint.") var noVerify = false
  @Option(help: "Request timeout in seconds (0 = default 60).") var timeout: UInt32?

  func validate() throws {
    if provider == nil && model == nil && timeout == nil { throw ValidationError("give at least one of --provider, --model, --timeout") }
  }

  func run() async throws {
    try await PolicyCLI.run {
      let r = try global.resolve()
      let current = try await PolicyCLI.withClients(r.target) { _, inf in
        try await inf.getInferenceRoute(.with { $0.routeName = InferenceCommand.route(system) }, options: SandboxCLI.options()).route
      }
      try await InferenceCommand.set(
        global, system: system, provider: provider ?? current.providerName, model: model ?? current.modelID,
        timeout: timeout ?? current.timeoutSecs, noVerify: noVerify, verb: "updated")
    }
  }
}

struct InferenceGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "get", abstract: "Show the inference routes.")
  @OptionGroup var global: GatewayOptions
  @Flag(help: "Only the sandbox-system route.") var system = false

  func run() async throws {
    try await PolicyCLI.run {
      let r = try global.resolve()
      let routes = system ? ["sandbox-system"] : ["inference.local", "sandbox-system"]
      let found = try await PolicyCLI.withClients(r.target) { _, inf in
        var out: [(String, Openshell_Inference_V1_InferenceRoute?)] = []
        for name in routes {
          do {
            out.append((name, try await inf.getInferenceRoute(.with { $0.routeName = name }, options: SandboxCLI.options()).route))
          } catch let e as RPCError where e.code == .notFound {
            out.append((name, nil))
          }
        }
        return out
      }
      for (i, (name, route)) in found.enumerated() {
        if i > 0 { print("") }
        let title = name == "sandbox-system" ? "System inference:" : "Gateway inference:"
        if let route { InferenceCommand.show(title, route) } else { print("\(Style.bold(title))\n  Not configured") }
      }
    }
  }
}

struct InferenceDelete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "delete", abstract: "Remove an inference route.")
  @OptionGroup var global: GatewayOptions
  @Flag(help: "The sandbox-system route.") var system = false

  func run() async throws {
    try await PolicyCLI.run {
      let r = try global.resolve()
      let route = InferenceCommand.route(system)
      let resp = try await PolicyCLI.withClients(r.target) { _, inf in
        try await inf.deleteInferenceRoute(.with { $0.routeName = route }, options: SandboxCLI.options())
      }
      print(resp.deleted ? "\(Style.check) Inference route \(route) deleted" : "· Inference route \(route) was not configured")
    }
  }
}

/// `openshell policy example`: prints a commented, valid example policy to start from.
struct PolicyExampleCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "example", abstract: "Print a commented example policy (openshell policy example > policy.yaml).")

  func run() throws { print(PolicyExample.yaml) }
}
