import ArgumentParser
import EventLog
import Foundation
import Gateway

/// `openshell gateway serve`: runs the gateway in the foreground (the lifecycle commands start it
/// as a daemon).
struct GatewayServe: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "serve",
    abstract: "Run a gateway in the foreground: gRPC and HTTP on one port, mTLS by default.")

  @Option(help: "Data directory (event log and PKI).") var dataDir: String
  @Option(help: "Port for gRPC and HTTP.") var port: Int = 8080
  @Option(help: "Listen address.") var bind: String = "127.0.0.1"
  @Flag(help: "No TLS (only behind a TLS-terminating proxy).") var plaintext = false
  @Flag(help: "TLS without client certificates.") var disableGatewayAuth = false
  @Option(help: "Extra host name or IP for the server certificate (repeatable).") var gatewayHost: [String] = []
  @Option(help: "Gateway name recorded in the log.") var name: String = "openshell"
  @Flag(help: "GPU passthrough (refused: not supported yet).") var gpu = false
  @Option(help: "Container registry user name (refused: no image-pulling driver yet).") var registryUsername: String?
  @Option(help: "Container registry token (refused: no image-pulling driver yet).") var registryToken: String?
  @Option(help: "Graceful shutdown deadline in seconds.") var shutdownTimeout: Int = 10
  @Option(
    help:
      "Compute driver: local (sandboxes run as supervised processes) or none (sandboxes are recorded and stay PROVISIONING; benchmarks of the request path)."
  )
  var computeDriver: String = "local"
  @Option(help: "Lifetime of SSH session tokens in seconds (0 = no expiry).") var sshSessionTtl: Int64 = 86_400
  @Option(help: "Accept OIDC bearer tokens from this issuer (env OPENSHELL_OIDC_ISSUER).") var oidcIssuer: String?
  @Option(help: "Audience every bearer token must carry (env OPENSHELL_OIDC_AUDIENCE).") var oidcAudience: String?
  @Option(help: "Public client id the CLI logs in with (env OPENSHELL_OIDC_CLIENT_ID).") var oidcClientId: String?
  @Option(help: "Scopes the CLI requests, space separated (env OPENSHELL_OIDC_SCOPES; default openid).") var oidcScopes: String?
  @Option(
    help:
      "Export the audit trail as OTLP log records (OCSF bodies) to this OTLP/gRPC collector, e.g. http://127.0.0.1:4317 (default: $OPENSHELL_OTLP_ENDPOINT; OTEL_EXPORTER_OTLP_* variables apply)."
  )
  var otlpEndpoint: String?

  func validate() throws {
    guard (1...65535).contains(port) || port == 0 else { throw ValidationError("--port must be 1-65535") }
    guard ["local", "none"].contains(computeDriver) else {
      throw ValidationError("--compute-driver must be local or none, not \(computeDriver.debugDescription)")
    }
    guard sshSessionTtl >= 0 else { throw ValidationError("--ssh-session-ttl must be 0 (no expiry) or a number of seconds") }
    if plaintext && disableGatewayAuth { throw ValidationError("--plaintext and --disable-gateway-auth are exclusive") }
    if let otlpEndpoint {
      do { try OTLPExportSettings(endpoint: otlpEndpoint).validate() } catch { throw ValidationError("--otlp-endpoint: \(error)") }
    }
  }

  func run() async throws {
    do {
      try Unsupported.check(gpu: gpu, registryUsername: registryUsername, registryToken: registryToken)
    } catch let e as CLIError {
      throw fail(e.message)
    }
    Unsupported.warnAboutEnvironment()
    var c = GatewayConfiguration(dataDirectory: dataDir)
    c.port = port
    c.bindAddress = bind
    c.security = plaintext ? .plaintext : (disableGatewayAuth ? .tls : .mutualTLS)
    c.gatewayHosts = gatewayHost
    c.gatewayName = name
    c.shutdownGracePeriod = .seconds(shutdownTimeout)
    c.sshSessionTTLSeconds = sshSessionTtl
    c.computeDriver = computeDriver
    c.oidc = OIDCSettings.resolve(issuer: oidcIssuer, audience: oidcAudience, clientID: oidcClientId, scopes: oidcScopes)
    if c.oidc == nil, oidcAudience != nil || oidcClientId != nil || oidcScopes != nil {
      throw fail("--oidc-audience, --oidc-client-id and --oidc-scopes need --oidc-issuer (or OPENSHELL_OIDC_ISSUER)")
    }
    do { try c.oidc?.validate() } catch { throw fail("\(error)") }
    if let otlpEndpoint { c.otlpExport = OTLPExportSettings(endpoint: otlpEndpoint) }
    let config = c
    do {
      try await serve(config) { _, port in
        let auth = config.oidc.map { ", OIDC bearer tokens from \($0.issuer)" } ?? ""
        FileHandle.standardOutput.write(Data("gateway \(config.gatewayName) listening on \(config.bindAddress):\(port) (\(config.security)\(auth))\n".utf8))
      }
    } catch let e as GatewayServerError {
      throw fail(e.description)
    } catch let e as GatewayStartupError {
      throw fail(e.description)
    } catch let e as EventLogError {
      throw fail(e.message)
    } catch let e as GatewayPKIError {
      throw fail(e.description)
    } catch let e as GatewayConfigurationError {
      throw fail(e.description)
    }
  }
}
