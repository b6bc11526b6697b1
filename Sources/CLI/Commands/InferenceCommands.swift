// `openshell inference set|update|get|delete`: the inference routes sandboxes reach at inference.local.

import ArgumentParser
import GRPCCore
import OpenShellAPI

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
