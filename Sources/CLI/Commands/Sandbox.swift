// `openshell sandbox`: the command group, and the reads `sandbox list` and `sandbox get`. Create and exec:
// SandboxCreateExec.swift; delete, stop, start: SandboxLifecycleCommands.swift; the other subcommands
// (logs, connect, ssh-config, upload, download) live with their features.

import ArgumentParser
import Foundation
import GRPCCore
import OpenShellAPI

/// `openshell sandbox …`: create, list, get, delete, exec, stop, start.
struct SandboxCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "sandbox",
    abstract: "Create and manage sandboxes.",
    subcommands: [
      SandboxCreate.self, SandboxList.self, SandboxGet.self, SandboxDelete.self, SandboxExec.self,
      SandboxStop.self, SandboxStart.self, SandboxLogs.self, SandboxConnect.self, SandboxSSHConfig.self, SandboxUpload.self, SandboxDownload.self,
    ],
    aliases: ["sb"])
}

struct SandboxList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "list", abstract: "List sandboxes.", aliases: ["ls"])
  @OptionGroup var global: GatewayOptions
  @OptionGroup var out: OutputOptions
  @Option(help: "Workspace.") var workspace = "default"
  @Option(help: "Label selector, e.g. team=a.") var selector: String?
  @Flag(help: "Print only names.") var names = false
  @Flag(help: "Print only ids.") var ids = false

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let all = try await GatewayClient.withClient(r.target) { c in
        var items: [Openshell_V1_Sandbox] = []
        var token = ""
        repeat {
          let page = try await c.listSandboxes(
            .with {
              $0.pageSize = 1000
              $0.pageToken = token
              $0.labelSelector = selector ?? ""
              $0.workspaceScope = SandboxCLI.scope(workspace)
            }, options: SandboxCLI.options())
          items += page.sandboxes
          token = page.nextPageToken
        } while !token.isEmpty
        return items
      }
      if names || ids {
        for s in all { print(names ? s.metadata.name : s.metadata.id) }
        return
      }
      if out.output != .table {
        let rows: [[String: Any]] = all.map {
          [
            "name": $0.metadata.name, "id": $0.metadata.id, "workspace": $0.metadata.workspace, "phase": SandboxCLI.phaseName($0.status.phase),
            "created": iso8601($0.metadata.createdTime.date), "labels": $0.metadata.labels,
          ]
        }
        print(out.output == .json ? try jsonString(rows) : try Record(pairs: [("sandboxes", rows)]).render(.yaml))
        return
      }
      guard !all.isEmpty else {
        print("No sandboxes found.")
        return
      }
      print(
        renderTable(
          header: ["NAME", "WORKSPACE", "CREATED", "PHASE"],
          rows: all.map {
            [$0.metadata.name, $0.metadata.workspace, utcDateTime($0.metadata.createdTime.date), SandboxCLI.colored($0.status.phase)]
          }))
    }
  }
}

struct SandboxGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "get", abstract: "Show one sandbox.")
  @OptionGroup var global: GatewayOptions
  @OptionGroup var out: OutputOptions
  @Argument(help: "Sandbox name (default: the last used).") var name: String?
  @Option(help: "Workspace.") var workspace = "default"
  @Option(help: "Show the sandbox as it was at this point: a seq, an RFC 3339 time or a duration ago (5m); rebuilt from the gateway's log.")
  var at: String?

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let n = try SandboxCLI.name(name, gateway: r.name)
      if let at {
        let (seq, view) = try await PointInTime.sandbox(r.target, name: n, workspace: workspace, at: at)
        print(try PointInTime.sandboxRecord(seq, view).render(out.output, title: "Sandbox (as of seq \(seq)):"))
        return
      }
      let s = try await GatewayClient.withClient(r.target) { c in
        try await c.getSandbox(
          .with {
            $0.name = n; $0.workspaceScope = SandboxCLI.scope(workspace)
          }, options: SandboxCLI.options()
        ).sandbox
      }
      let ready = s.status.conditions.first { $0.type == "Ready" }
      // What the local driver recorded at the last start: user, Landlock ABI and mode, seccomp.
      let confinement = s.status.conditions.first { $0.type == "Confinement" }
      let record = Record(pairs: [
        ("Id", s.metadata.id), ("Name", s.metadata.name), ("Workspace", s.metadata.workspace),
        ("Phase", SandboxCLI.phaseName(s.status.phase)), ("Created", iso8601(s.metadata.createdTime.date)),
        ("Labels", s.metadata.labels.isEmpty ? nil : s.metadata.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")),
        ("Reason", ready.map { $0.reason }), ("Message", ready?.message.nilIfEmpty),
        ("Exit code", s.status.hasExitCode ? String(s.status.exitCode) : nil),
        ("Policy version", s.status.currentPolicyVersion > 0 ? Int(s.status.currentPolicyVersion) : nil),
        ("Confinement", confinement.map { c in c.status == "True" ? c.message : "\(c.reason): \(c.message)" }),
        (
          "Limits",
          SandboxCLI.limits(s.spec).map { l in
            out.output == .table ? l.map { "\($0.key) \($0.value)" }.joined(separator: ", ") as Any : Dictionary(uniqueKeysWithValues: l) as Any
          }
        ),
      ])
      print(try record.render(out.output, title: "Sandbox:"))
    }
  }
}
