import ArgumentParser
import Foundation

/// Global gateway selection, accepted by every command that targets a gateway (also before the
/// subcommand: `openshell -g dev status`).
struct GatewayOptions: ParsableArguments {
  @Option(name: [.short, .customLong("gateway")], help: "Gateway to use (env OPENSHELL_GATEWAY; default: the active gateway).")
  var gateway: String?

  @Option(name: .customLong("gateway-endpoint"), help: "Talk to this URL directly (env OPENSHELL_GATEWAY_ENDPOINT).")
  var gatewayEndpoint: String?

  /// The gateway name from `-g`, then `$OPENSHELL_GATEWAY`.
  var explicitName: String? {
    if let g = gateway, !g.isEmpty { return g }
    if let e = ProcessInfo.processInfo.environment["OPENSHELL_GATEWAY"], !e.isEmpty { return e }
    return nil
  }

  /// A gateway name for lifecycle commands: `--name`, `-g`, `$OPENSHELL_GATEWAY`, the active gateway
  /// (unless `useActive` is false), then `openshell`. A given `--name` is returned as given, even empty
  /// (never replaced by the default); `checkGatewayNames` rejects an invalid one before the command runs.
  func name(_ flag: String?, useActive: Bool = true) -> String {
    if let f = flag { return f }
    if let n = explicitName { return n }
    if useActive, let a = ClientRegistry.default.active { return a }
    return "openshell"
  }

  /// Resolves the gateway to contact (openshell-behavior.md §1.0): `--gateway-endpoint`, `-g`,
  /// `$OPENSHELL_GATEWAY`, then `active_gateway`.
  func resolve() throws -> Resolved {
    let registry = ClientRegistry.default
    let env = ProcessInfo.processInfo.environment
    if let url = gatewayEndpoint ?? env["OPENSHELL_GATEWAY_ENDPOINT"].flatMap({ $0.isEmpty ? nil : $0 }) {
      let norm = url.hasSuffix("/") ? String(url.dropLast()) : url
      let meta = gateway.flatMap { registry.metadata($0) } ?? registry.all().first { $0.gateway_endpoint == norm }
      let name = gateway ?? meta?.name ?? norm
      let target = try Target(name: name, endpoint: norm, authMode: meta?.auth_mode, mtlsDir: meta.map { registry.mtlsDir($0.name) })
      ResolvedGateway.last = (name, norm, meta?.type)
      return Resolved(name: name, metadata: meta, target: target)
    }
    guard let name = explicitName ?? registry.active else {
      throw CLIError("no active gateway; set one with 'openshell gateway select <name>' or deploy one with 'openshell gateway start'")
    }
    guard let meta = registry.metadata(name) else {
      throw registry.unknownGateway(name)
    }
    try GatewayTunnel.ensure(meta)
    let target = try Target(name: name, endpoint: meta.gateway_endpoint, authMode: meta.auth_mode, mtlsDir: registry.mtlsDir(name))
    ResolvedGateway.last = (name, meta.gateway_endpoint, meta.type)
    return Resolved(name: name, metadata: meta, target: target)
  }

  struct Resolved {
    var name: String
    var metadata: GatewayMetadata?
    var target: Target
  }
}

/// Commands whose `--name` option names a gateway (not a sandbox or provider).
protocol GatewayNameOption {
  var name: String? { get }
}

extension GatewayStart: GatewayNameOption {}
extension GatewayStop: GatewayNameOption {}
extension GatewayDestroy: GatewayNameOption {}
extension GatewayInfo: GatewayNameOption {}
extension DoctorLogs: GatewayNameOption {}
extension DoctorExec: GatewayNameOption {}
extension DoctorCheck: GatewayNameOption {}

/// Rejects an explicitly given gateway name that no gateway can have, before the command runs: a
/// gateway command's `--name` and the global `-g`/`--gateway` (`--name ""` is an error, not the default
/// gateway). `$OPENSHELL_GATEWAY` set to the empty string still means unset.
func checkGatewayNames(_ command: ParsableCommand) throws {
  if let c = command as? GatewayNameOption, let n = c.name { try ClientRegistry.validateName(n) }
  for child in Mirror(reflecting: command).children {
    if let group = child.value as? OptionGroup<GatewayOptions>, let g = group.wrappedValue.gateway {
      try ClientRegistry.validateName(g)
    }
  }
}

/// Moves global options given before the subcommand (`openshell -g dev status`) after it, so that
/// the subcommand's `GatewayOptions` parses them. Everything after `--` is left alone.
func hoistGlobalOptions(_ args: [String]) -> [String] {
  var hoisted: [String] = []
  var rest: [String] = []
  var i = 0
  var seenSubcommand = false
  while i < args.count {
    let a = args[i]
    if a == "--" { rest += args[i...]; break }
    if !seenSubcommand, ["-g", "--gateway", "--gateway-endpoint"].contains(a), i + 1 < args.count {
      hoisted += [a, args[i + 1]]
      i += 2
      continue
    }
    if !seenSubcommand, a.hasPrefix("--gateway=") || a.hasPrefix("--gateway-endpoint=") {
      hoisted.append(a)
      i += 1
      continue
    }
    if !a.hasPrefix("-") { seenSubcommand = true }
    rest.append(a)
    i += 1
  }
  guard !hoisted.isEmpty else { return args }
  if let dd = rest.firstIndex(of: "--") { rest.insert(contentsOf: hoisted, at: dd) } else { rest += hoisted }
  return rest
}

/// The gateway the running command resolved last (name, endpoint, registration type), so that a
/// connection failure can be reported with the gateway's name and the command that helps.
/// The CLI resolves its gateway once, on the main task, before any RPC.
enum ResolvedGateway {
  nonisolated(unsafe) static var last: (name: String, endpoint: String, type: String?)?
}
