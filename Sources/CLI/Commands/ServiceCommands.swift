import ArgumentParser
import Foundation
import GRPCCore
import OpenShellAPI

/// `openshell service expose|list|get|delete`: HTTP services on a sandbox's loopback reachable through
/// the gateway's port (OpenShell's command shapes: `service expose SANDBOX PORT [SERVICE]`, `service
/// get SANDBOX [SERVICE]`, `service list [SANDBOX] [--all-workspaces]`, `service delete SANDBOX
/// [SERVICE]`; an omitted SERVICE is the sandbox's unnamed service). URLs are path-based: see the
/// gateway's `ServiceURL`. The URL is reached with the same client certificate as the API, e.g.
/// `curl --cacert ca.crt --cert client.crt --key client.key URL`.
struct ServiceCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "service", abstract: "Expose HTTP services of sandboxes through the gateway.",
    subcommands: [ServiceExpose.self, ServiceList.self, ServiceGet.self, ServiceDelete.self])

  /// The table/JSON view of one exposure.
  static func row(_ s: Openshell_V1_ServiceEndpointResponse) -> [String: Any] {
    [
      "sandbox": s.endpoint.sandbox, "service": s.endpoint.name, "target_port": Int(s.endpoint.targetPort),
      "authorization": s.endpoint.authorizationMode == .bearerPassthrough ? "bearer-passthrough" : "strip", "url": s.url,
    ]
  }

  static func show(_ s: Openshell_V1_ServiceEndpointResponse, _ format: OutputFormat) throws -> String {
    let r = row(s)
    if format == .json { return try jsonString(r) }
    return try Record(pairs: [
      ("Sandbox", r["sandbox"]), ("Service", s.endpoint.name.isEmpty ? "(unnamed)" : s.endpoint.name), ("Target port", r["target_port"]),
      ("Authorization", r["authorization"]), ("URL", r["url"]),
    ]).render(format)
  }
}

/// How the gateway treats the caller's `Authorization` header.
enum ServiceAuthorization: String, ExpressibleByArgument, CaseIterable {
  case strip
  case bearerPassthrough = "bearer-passthrough"
}

struct ServiceExpose: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "expose", abstract: "Expose a sandbox's loopback HTTP port; prints its URL.")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name.") var sandbox: String
  @Argument(help: "Port of the service on the sandbox's loopback (1-65535).") var port: UInt32
  @Argument(help: "Service name (default: the unnamed service).") var service: String = ""
  @Option(help: "strip (default): the caller's Authorization header never reaches the service; bearer-passthrough: it does.")
  var authorization: ServiceAuthorization = .strip
  @Option(help: "Workspace.") var workspace = "default"
  @OptionGroup var out: OutputOptions

  func validate() throws {
    if port == 0 || port > 65535 { throw ValidationError("the port must be 1-65535") }
  }

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let response = try await GatewayClient.withClient(r.target) { c in
        try await c.exposeService(
          .with {
            $0.sandbox = sandbox; $0.name = service; $0.targetPort = port
            $0.workspaceScope = SandboxCLI.scope(workspace)
            $0.authorizationMode = authorization == .bearerPassthrough ? .bearerPassthrough : .strip
            $0.requestID = UUID().uuidString.lowercased()
          }, options: SandboxCLI.options())
      }
      if out.output == .table {
        print("\(Style.green("✓")) Exposed \(service.isEmpty ? "the unnamed service" : "service \(service)") of \(sandbox) (port \(port)): \(response.url)")
      } else {
        print(try ServiceCommand.show(response, out.output))
      }
    }
  }
}

struct ServiceGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "get", abstract: "Show an exposed service and its URL.")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name.") var sandbox: String
  @Argument(help: "Service name (default: the unnamed service).") var service: String = ""
  @Option(help: "Workspace.") var workspace = "default"
  @OptionGroup var out: OutputOptions

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let response = try await GatewayClient.withClient(r.target) { c in
        try await c.getService(
          .with {
            $0.sandbox = sandbox; $0.name = service; $0.workspaceScope = SandboxCLI.scope(workspace)
          }, options: SandboxCLI.options())
      }
      print(try ServiceCommand.show(response, out.output))
    }
  }
}

struct ServiceList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "list", abstract: "List exposed services (of one sandbox, or of the workspace).")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name (default: every sandbox of the workspace).") var sandbox: String?
  @Option(help: "Workspace.") var workspace = "default"
  @Flag(help: "Every workspace.") var allWorkspaces = false
  @OptionGroup var out: OutputOptions

  func validate() throws {
    if sandbox != nil && allWorkspaces { throw ValidationError("a sandbox name and --all-workspaces exclude each other") }
  }

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let services = try await GatewayClient.withClient(r.target) { c in
        var all: [Openshell_V1_ServiceEndpointResponse] = []
        var token = ""
        repeat {
          let page = try await c.listServices(
            .with {
              $0.sandbox = sandbox ?? ""
              $0.pageToken = token
              $0.workspaceScope = allWorkspaces ? .with { $0.allWorkspaces = .init() } : SandboxCLI.scope(workspace)
            }, options: SandboxCLI.options())
          all += page.services
          token = page.nextPageToken
        } while !token.isEmpty
        return all
      }
      switch out.output {
      case .json: print(try jsonString(services.map(ServiceCommand.row)))
      case .yaml: print(try Record(pairs: [("services", services.map(ServiceCommand.row))]).render(.yaml))
      case .table:
        if services.isEmpty {
          print("No services found.")
          return
        }
        print(
          renderTable(
            header: ["SANDBOX", "SERVICE", "PORT", "AUTHORIZATION", "URL"],
            rows: services.map { s in
              [
                s.endpoint.sandbox, s.endpoint.name.isEmpty ? "(unnamed)" : s.endpoint.name, String(s.endpoint.targetPort),
                s.endpoint.authorizationMode == .bearerPassthrough ? "bearer-passthrough" : "strip", s.url,
              ]
            }))
      }
    }
  }
}

struct ServiceDelete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "delete", abstract: "Stop exposing a service (its URL answers 404).")
  @OptionGroup var global: GatewayOptions
  @Argument(help: "Sandbox name.") var sandbox: String
  @Argument(help: "Service name (default: the unnamed service).") var service: String = ""
  @Option(help: "Workspace.") var workspace = "default"

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      _ = try await GatewayClient.withClient(r.target) { c in
        try await c.deleteService(
          .with {
            $0.sandbox = sandbox; $0.name = service; $0.workspaceScope = SandboxCLI.scope(workspace)
            $0.requestID = UUID().uuidString.lowercased()
          }, options: SandboxCLI.options())
      }
      print("\(Style.green("✓")) Deleted \(service.isEmpty ? "the unnamed service" : "service \(service)") of \(sandbox)")
    }
  }
}
