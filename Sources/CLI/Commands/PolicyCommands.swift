// `openshell policy set|get|list|delete|example`: sandbox and global policies. Related command groups:
// SettingsCommands.swift (`openshell settings`), InferenceCommands.swift (`openshell inference`).

import ArgumentParser
import Foundation
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

/// `openshell policy example`: prints a commented, valid example policy to start from.
struct PolicyExampleCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "example", abstract: "Print a commented example policy (openshell policy example > policy.yaml).")

  func run() throws { print(PolicyExample.yaml) }
}
