import ArgumentParser
import Foundation
import GRPCCore
import Gateway
import OpenShellAPI

/// `openshell provider …`: credentials for agents (openshell-behavior.md §1D). Credential values are
/// never printed: every response shows key names only.
struct ProviderCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "provider",
    abstract: "Manage providers (credentials delivered to the sandboxes that use them).",
    discussion: "Types: \(ProviderCatalog.types.joined(separator: ", ")) (aliases: gh → github, glab → gitlab).",
    subcommands: [ProviderCreate.self, ProviderGet.self, ProviderList.self, ProviderUpdate.self, ProviderDelete.self])
}

/// Shared pieces of the provider commands.
enum ProviderCLI {
  static func scope(_ workspace: String) -> Openshell_Datamodel_V1_WorkspaceSelector { .with { $0.workspace = workspace } }

  static func options(_ seconds: Int64 = 30) -> CallOptions {
    var o = CallOptions.defaults
    o.timeout = .seconds(seconds)
    o.waitForReady = false
    return o
  }

  /// The canonical type, or a clear error listing the known ones.
  static func type(_ raw: String) throws -> String {
    guard let t = ProviderCatalog.normalize(raw) else {
      throw CLIError("unknown provider type '\(raw)'; known types: \(ProviderCatalog.types.joined(separator: ", "))")
    }
    return t
  }

  /// `--credential KEY=VALUE` (an empty VALUE is kept: on update it deletes the key) or `--credential KEY`
  /// (reads `$KEY`, which must be set and non-empty). Error messages name keys, never values.
  static func credentials(_ items: [String], environment: [String: String]) throws -> [String: String] {
    var out: [String: String] = [:]
    for item in items {
      let key: String
      let value: String
      if let eq = item.firstIndex(of: "=") {
        key = String(item[..<eq])
        value = String(item[item.index(after: eq)...])
      } else {
        key = item
        guard let v = environment[key] else { throw CLIError("--credential \(key): environment variable \(key) is not set") }
        guard !v.isEmpty else { throw CLIError("--credential \(key): environment variable \(key) is empty") }
        value = v
      }
      guard ProviderCatalog.isEnvironmentName(key) else {
        throw CLIError("--credential: invalid key '\(key)'; keys must match [A-Za-z_][A-Za-z0-9_]*")
      }
      out[key] = value
    }
    return out
  }

  /// `--from-existing`: the type's variables found (non-empty) in the environment.
  static func discover(type: String, environment: [String: String]) throws -> [String: String] {
    let found = ProviderCatalog.discover(type: type, environment: environment)
    if found.isEmpty {
      let vars = ProviderCatalog.discoveryVariables[type] ?? []
      throw CLIError(
        vars.isEmpty
          ? "--from-existing: provider type \(type) has no known environment variables; use --credential KEY[=VALUE]"
          : "--from-existing: no credentials for type \(type) found in the environment (looked for \(vars.joined(separator: ", ")))")
    }
    return found
  }

  static func config(_ items: [String]) throws -> [String: String] {
    var out: [String: String] = [:]
    for item in items {
      guard let eq = item.firstIndex(of: "="), eq != item.startIndex else { throw CLIError("--config expects KEY=VALUE, got '\(item)'") }
      out[String(item[..<eq])] = String(item[item.index(after: eq)...])
    }
    return out
  }

  /// A provider as data (values never included).
  static func record(_ p: Openshell_Datamodel_V1_Provider) -> Record {
    Record(pairs: [
      ("Id", p.metadata.id), ("Name", p.metadata.name), ("Workspace", p.metadata.workspace), ("Type", p.type),
      ("Credential keys", p.credentials.keys.sorted()), ("Config keys", p.config.keys.sorted()),
    ])
  }

  static func render(_ p: Openshell_Datamodel_V1_Provider, _ format: OutputFormat) throws -> String {
    if format != .table { return try record(p).render(format) }
    let keys = p.credentials.keys.sorted()
    let config = p.config.keys.sorted()
    return try Record(pairs: [
      ("Id", p.metadata.id), ("Name", p.metadata.name), ("Workspace", p.metadata.workspace), ("Type", p.type),
      ("Credential keys", keys.isEmpty ? "-" : keys.joined(separator: ", ")),
      ("Config keys", config.isEmpty ? "-" : config.joined(separator: ", ")),
    ]).render(.table, title: "Provider")
  }
}

struct ProviderCreate: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "create",
    abstract: "Create a provider from local credentials (--from-existing) or explicit ones (--credential).")
  @OptionGroup var global: GatewayOptions
  @Option(help: "Provider name (default: generated).") var name: String?
  @Option(help: "Provider type (\(ProviderCatalog.types.joined(separator: ", "))).") var type: String
  @Flag(help: "Read the type's credentials from the environment (e.g. ANTHROPIC_API_KEY for claude).") var fromExisting = false
  @Option(name: .customLong("credential"), help: "KEY=VALUE, or KEY to read $KEY (repeatable).") var credentials: [String] = []
  @Option(name: .customLong("config"), help: "Non-secret setting KEY=VALUE (repeatable).") var config: [String] = []
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await cliRun {
      let t = try ProviderCLI.type(type)
      let env = ProcessInfo.processInfo.environment
      if fromExisting && !credentials.isEmpty { throw CLIError("--from-existing and --credential are exclusive") }
      let creds = fromExisting ? try ProviderCLI.discover(type: t, environment: env) : try ProviderCLI.credentials(credentials, environment: env)
      if let name, name.isEmpty { throw CLIError("the provider name is empty; leave --name out to get a generated name") }
      if creds.isEmpty { throw CLIError("no credentials given; use --from-existing or --credential KEY[=VALUE]") }
      if let k = creds.first(where: { $0.value.isEmpty })?.key { throw CLIError("--credential \(k): empty value") }
      let cfg = try ProviderCLI.config(config)
      let r = try global.resolve()
      let created = try await GatewayClient.withClient(r.target) { c in
        try await c.createProvider(
          .with {
            $0.workspaceScope = ProviderCLI.scope(workspace)
            $0.provider = .with {
              $0.metadata.name = name ?? ""
              $0.type = t
              $0.credentials = creds
              $0.config = cfg
            }
          }, options: ProviderCLI.options()
        ).provider
      }
      print("\(Style.check) Created provider \(created.metadata.name)")
    }
  }
}

struct ProviderGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "get", abstract: "Show a provider (credential key names only).")
  @OptionGroup var global: GatewayOptions
  @OptionGroup var out: OutputOptions
  @Argument(help: "Provider name.") var name: String
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let p = try await GatewayClient.withClient(r.target) { c in
        try await c.getProvider(
          .with {
            $0.name = name; $0.workspaceScope = ProviderCLI.scope(workspace)
          }, options: ProviderCLI.options()
        ).provider
      }
      print(try ProviderCLI.render(p, out.output))
    }
  }
}

struct ProviderList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "list", abstract: "List providers.", aliases: ["ls"])
  @OptionGroup var global: GatewayOptions
  @OptionGroup var out: OutputOptions
  @Option(help: "At most this many providers.") var limit = 100
  @Option(help: "Skip this many providers.") var offset = 0
  @Flag(help: "Print only names.") var names = false
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await cliRun {
      guard limit >= 0, offset >= 0 else { throw CLIError("--limit and --offset must not be negative") }
      let r = try global.resolve()
      let all = try await GatewayClient.withClient(r.target) { c in
        var items: [Openshell_Datamodel_V1_Provider] = []
        var token = ""
        repeat {
          let page = try await c.listProviders(
            .with {
              $0.pageSize = 1000
              $0.pageToken = token
              $0.workspaceScope = ProviderCLI.scope(workspace)
            }, options: ProviderCLI.options())
          items += page.providers
          token = page.nextPageToken
        } while !token.isEmpty && items.count < offset + limit
        return items
      }
      let shown = Array(all.dropFirst(offset).prefix(limit))
      if names {
        for p in shown { print(p.metadata.name) }
        return
      }
      if out.output != .table {
        let rows = shown.map { ProviderCLI.record($0).dictionary() }
        print(out.output == .json ? try jsonString(rows) : try Record(pairs: [("providers", rows)]).render(.yaml))
        return
      }
      guard !shown.isEmpty else {
        print("No providers found.")
        return
      }
      print(
        renderTable(
          header: ["NAME", "TYPE", "CREDENTIAL_KEYS", "CONFIG_KEYS"],
          rows: shown.map {
            [$0.metadata.name, $0.type, String($0.credentials.count), String($0.config.count)]
          }))
    }
  }
}

struct ProviderUpdate: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "update",
    abstract: "Update a provider: credentials and config are merged; KEY= (empty value) deletes a key.",
    discussion: "A new value for an existing credential is recorded as a rotation. The type cannot change.")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Provider name.") var name: String
  @Flag(help: "Read the provider type's credentials from the environment.") var fromExisting = false
  @Option(name: .customLong("credential"), help: "KEY=VALUE, KEY= to delete, or KEY to read $KEY (repeatable).") var credentials: [String] = []
  @Option(name: .customLong("config"), help: "KEY=VALUE, or KEY= to delete (repeatable).") var config: [String] = []
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await cliRun {
      if fromExisting && !credentials.isEmpty { throw CLIError("--from-existing and --credential are exclusive") }
      let env = ProcessInfo.processInfo.environment
      let explicit = try ProviderCLI.credentials(credentials, environment: env)
      let cfg = try ProviderCLI.config(config)
      let r = try global.resolve()
      let updated = try await GatewayClient.withClient(r.target) { c in
        var creds = explicit
        if fromExisting {
          let current = try await c.getProvider(
            .with {
              $0.name = name; $0.workspaceScope = ProviderCLI.scope(workspace)
            }, options: ProviderCLI.options()
          ).provider
          creds = try ProviderCLI.discover(type: current.type, environment: env)
        }
        return try await c.updateProvider(
          .with {
            $0.workspaceScope = ProviderCLI.scope(workspace)
            $0.provider = .with {
              $0.metadata.name = name
              $0.credentials = creds
              $0.config = cfg
            }
          }, options: ProviderCLI.options()
        ).provider
      }
      print("\(Style.check) Updated provider \(updated.metadata.name)")
    }
  }
}

struct ProviderDelete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "delete", abstract: "Delete providers (their data keys are destroyed).", aliases: ["rm"])
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Provider names.") var names: [String]
  @Flag(help: "Delete even when sandboxes use the provider (it is detached from them).") var force = false
  @Option(help: "Workspace.") var workspace = "default"

  func validate() throws {
    if names.isEmpty { throw ValidationError("give at least one provider name") }
  }

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let metadata: Metadata = force ? [OpenShellService.forceDeleteHeader: "true"] : [:]
      try await GatewayClient.withClient(r.target) { c in
        for n in names {
          let (response, removedRoutes) = try await c.deleteProvider(
            .with {
              $0.name = n; $0.allowMissing = true; $0.workspaceScope = ProviderCLI.scope(workspace)
            },
            metadata: metadata, options: ProviderCLI.options()
          ) { r in
            // A forced delete also deletes the inference routes that used the provider (named in the metadata).
            let routes = r.metadata[stringValues: OpenShellService.removedRoutesHeader].flatMap { $0.split(separator: ",").map(String.init) }
            return (try r.message, routes)
          }
          let deleted = response.outcome != .alreadyAbsent
          print(deleted ? "\(Style.check) Deleted provider \(n)" : "\(Style.yellow("!")) Provider \(n) not found")
          if !removedRoutes.isEmpty {
            print(
              "\(Style.yellow("!")) Deleted inference route\(removedRoutes.count == 1 ? "" : "s") \(removedRoutes.joined(separator: ", ")) "
                + "(it used provider \(n))")
          }
        }
      }
    }
  }
}
