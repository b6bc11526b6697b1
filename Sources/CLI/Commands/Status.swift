import ArgumentParser
import Foundation
import GRPCCore

/// `openshell status`: is the gateway reachable, and what does it run.
///
/// Exit codes: 0 Connected (gRPC Health answered), 3 Connected over HTTP only (`GET /healthz`
/// answered, gRPC failed), 1 Disconnected or an error such as a changed CA.
struct Status: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show the gateway's connection status (exit 0 gRPC ok, 3 HTTP-only, 1 disconnected).")
  @OptionGroup var global: GatewayOptions
  @OptionGroup var out: OutputOptions
  @Option(help: "Seconds to wait for the gateway.") var timeout: Double = 3

  func run() async throws {
    try await cliRun {
      let r = try global.resolve()
      let t = r.target
      if let message = await GatewayClient.caChangeMessage(t, type: r.metadata?.type) {
        throw CLIError(message)
      }
      // OIDC gateways: the token (refreshed here when it is about to expire) and its expiry.
      var authLine: String?
      var tokenLine: String?
      if t.authMode == "oidc" {
        authLine = "Bearer (OIDC)"
        do {
          _ = try await BearerTokens.current(gateway: r.name)
          tokenLine = ClientRegistry.default.oidcToken(r.name)?.expires_at.map { CloudGateway.expiry($0) } ?? "no expiry"
        } catch let e as CLIError {
          tokenLine = e.message
        }
      }
      var status = "Disconnected"
      var version: String?
      var errorText: String?
      var code: Int32 = 1
      do {
        let (serving, v) = try await GatewayClient.health(t, timeout: .milliseconds(Int64(timeout * 1000)))
        status = serving ? "Connected" : "Connected (not serving)"
        version = v
        code = serving ? 0 : 3
      } catch let grpcError {
        do {
          let h = try await HTTPProbe.get(t, path: "/healthz", timeout: .milliseconds(Int64(timeout * 1000)))
          if h.status == 200 {
            status = "Connected (HTTP)"
            code = 3
            // Reached over HTTP but gRPC refused: a refused bearer token is the usual reason; name it.
            if let e = grpcError as? RPCError, e.code == .unauthenticated || e.code == .permissionDenied {
              errorText =
                "the gateway refused this client: \(oneLine(e.message))"
                + (t.authMode == "oidc" ? "; log in again with: openshell gateway login \(r.name)" : "")
            }
            if let rz = try? await HTTPProbe.get(t, path: "/readyz"), let data = rz.body.data(using: .utf8),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
            {
              version = obj["version"] as? String
            }
          } else {
            errorText = "GET /healthz answered HTTP \(h.status)"
          }
        } catch {
          errorText = (grpcError as? RPCError).flatMap(connectionFailure) ?? oneLine("\(grpcError)")
        }
      }
      let record = Record(pairs: [
        ("Gateway", r.name), ("Server", t.endpoint),
        ("Remote host", r.metadata?.remote_host.map { h in r.metadata?.resolved_host.map { "\(h) (\($0))" } ?? h }),
        ("SSH tunnel", r.metadata?.ssh.flatMap { $0.tunnel ? "to \(r.metadata!.resolved_host ?? "host"):\(r.metadata!.gateway_port)" : nil }),
        ("Status", status), ("Version", version),
        ("Auth mode", t.authMode), ("Auth", authLine), ("Token expires", tokenLine), ("Error", errorText),
      ])
      if out.output == .table {
        var lines = try record.render(.table, title: "Server Status").split(separator: "\n").map(String.init)
        if let i = lines.firstIndex(where: { $0.contains("Status:") }) {
          lines[i] = lines[i].replacingOccurrences(of: status, with: code == 1 ? Style.red(status) : Style.green(status))
        }
        print(lines.joined(separator: "\n"))
      } else {
        print(try record.render(out.output))
      }
      if code != 0 {
        if code == 1 {
          let hint =
            errorText.flatMap(tlsFailure) != nil || errorText?.hasPrefix("the gateway's certificate") == true
            ? ""
            : r.metadata?.type == "local"
              ? (LocalGateway.startCommand(registration: r.name).map { "; is it running? start it with: \($0)" } ?? "; is the gateway behind it running?")
              : r.metadata?.ssh.map { "; is it running on \($0.destination)? start it with: openshell gateway start --name \(r.name)" } ?? ""
          printErr("error: gateway '\(r.name)' at \(t.endpoint) is not reachable: \(errorText ?? "no answer")\(hint)")
        }
        throw ExitCode(code)
      }
    }
  }
}

/// `openshell completions bash|zsh|fish`
struct Completions: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Print a shell completion script.")
  @Argument(help: "bash, zsh or fish.") var shell: String

  func run() throws {
    guard let s = CompletionShell(rawValue: shell) else {
      throw fail("unsupported shell '\(shell)'; use bash, zsh or fish")
    }
    print(OpenShell.completionScript(for: s))
  }
}
