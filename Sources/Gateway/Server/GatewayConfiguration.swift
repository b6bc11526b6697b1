import EventLog
import Foundation
import Projections
import SandboxConfinement
import SandboxProtocol

/// How to run a gateway (`openshell gateway serve`).
public struct GatewayConfiguration: Sendable {
  /// Data directory: `log/` (the LMDB event log) and `pki/` (CA, server and operator certificates).
  public var dataDirectory: String
  /// Listen address (default 127.0.0.1; use 0.0.0.0 to accept remote clients).
  public var bindAddress: String = "127.0.0.1"
  /// TCP port for gRPC and HTTP (OpenShell default 8080).
  public var port: Int = 8080
  /// mTLS (default), TLS without client certificates (`--disable-gateway-auth`) or plaintext (`--plaintext`).
  public var security: GatewaySecurityMode = .mutualTLS
  /// OIDC bearer tokens (`--oidc-issuer` …; issue 13); nil = none. Combines with every ``security`` mode.
  public var oidc: OIDCSettings?
  /// Extra host names or IPs the server certificate must cover (`--gateway-host`).
  public var gatewayHosts: [String] = []
  /// The host sandbox supervisors dial (and the SSH endpoint the gateway hands out): 127.0.0.1 for a
  /// wildcard bind (`0.0.0.0`, `::`), else the bind address itself. The server certificate always names
  /// it (IP or DNS SAN), because supervisors verify the gateway's host name (issue 16, TLS).
  public var supervisorDialHost: String {
    ["0.0.0.0", "::", "[::]", ""].contains(bindAddress) ? "127.0.0.1" : bindAddress
  }
  /// The gateway's name, recorded at initialisation and reported by GetGatewayInfo.
  public var gatewayName: String = "openshell"
  /// Recorded in the gateway's configuration events; GPU passthrough comes with the drivers.
  public var gpu = false
  /// Image registry user name, recorded in the configuration events (the token never is).
  public var registryUsername: String = ""
  /// Never stored: only its SHA-256 fingerprint enters the log.
  public var registryToken: String = ""
  /// Graceful shutdown deadline before in-flight RPCs are cancelled.
  public var shutdownGracePeriod: Duration = .seconds(10)
  /// Handle SIGTERM/SIGINT (off in tests that run several gateways in one process).
  public var handleSignals = true
  /// Options of the event log the gateway opens under `DATA/log` (durability, map size, dictionaries...).
  public var logOptions = EventLog.Options()
  /// Compute driver: `local` (default; sandboxes run as supervised processes in bubblewrap namespaces,
  /// see `LocalComputeDriver`) or `none` (sandboxes stay PROVISIONING).
  public var computeDriver: String = "local"
  /// Path of the supervisor binary (`openshell-sandbox`); nil = next to this executable.
  public var supervisorBinary: String?
  /// Lifetime of SSH session tokens in seconds (0 = none; default 24 h as OpenShell).
  public var sshSessionTTLSeconds: Int64 = 86_400
  /// Test-only: the local driver behaves as on a kernel without Landlock (documented switch
  /// `OPENSHELL_TEST_DISABLE_LANDLOCK=1` in the gateway's environment; tests set this property).
  /// Ed25519 key that signs audit checkpoints (issue 12); nil = `DATA/keys/audit-checkpoint.key`.
  /// Its public key is written beside it as `audit-checkpoint.pub.pem`.
  public var checkpointKeyPath: String?
  /// Records between signed checkpoints (one more is signed at shutdown); 0 turns signing off.
  public var checkpointInterval: UInt64 = 1000
  /// Records in the log before its first zstd dictionary is trained; later ones follow at twice the count
  /// each time (``DictionaryTrainer``). 0 turns training off.
  public var dictionaryTrainingAfter: UInt64 = 10_000
  /// Refused calls with the same identity, RPC, code and reason within this window become one
  /// `audit.access_refused` event with a count (issue 12).
  public var refusalWindow: Duration = .seconds(10)
  /// Export of the audit trail as OTLP log records (``OTLPAuditExporter``); nil = none. Default:
  /// `$OPENSHELL_OTLP_ENDPOINT`.
  public var otlpExport: OTLPExportSettings? = OTLPExportSettings.fromEnvironment()
  /// Whether refused calls are recorded (``AuditInterceptor``). Only the audit benchmark turns it off, to
  /// measure its cost (`openshell-loadgen --audit-overhead`); a gateway without it is not auditable.
  public var recordRefusals = true
  /// Serve all connections on one event loop and run the RPCs' tasks there
  /// (``GatewayServer/Configuration/rpcTasksOnEventLoop``). Off by default; `openshell-loadgen
  /// --server-event-loop` turns it on for comparisons (issue 14).
  public var rpcTasksOnEventLoop = false
  /// Tests only: behave as on a kernel without Landlock (`OPENSHELL_TEST_DISABLE_LANDLOCK=1`), to check the fail-closed path.
  public var simulateNoLandlock = ProcessInfo.processInfo.environment[ConfinementPlan.testDisableLandlockVariable] == "1"
  /// A PEM file of extra roots every sandbox's proxy trusts for upstream TLS, besides the system roots
  /// (the analogue of OpenShell's operator-installed CAs in the supervisor's trust store: private or
  /// corporate CAs, and tests' own CA). Default: `$OPENSHELL_UPSTREAM_CA_FILE`; nil = system roots only.
  public var upstreamTrustFile: String? = ProcessInfo.processInfo.environment["OPENSHELL_UPSTREAM_CA_FILE"].flatMap { $0.isEmpty ? nil : $0 }
  /// How long a supervisor session may stay silent before another session of the same instance may supersede
  /// it (``SessionArbitration``); supervisors send a heartbeat every 10 s. Default 25 s.
  public var supervisorStaleAfter: Duration = .seconds(25)
  /// Validity of each sandbox's client certificate, in seconds; the local driver renews it at 2/3 of this
  /// without restarting the sandbox (``SandboxCertificateRenewal``). Default 30 days; tests use seconds.
  public var sandboxCertificateLifetime: TimeInterval = GatewayPKI.defaultSandboxCertificateLifetime
  /// How long a sandbox's supervisor may take to connect after its start (or after this gateway adopted it at
  /// start-up) before the sandbox turns ERROR with reason `SupervisorNotReady`. Default 30 s; tests shorten it.
  public var supervisorReadyTimeout: Duration = LocalComputeDriver.defaultReadyTimeout

  /// The defaults above for a gateway whose state lives in `dataDirectory` (`log/`, `pki/`, `sandboxes/`...).
  public init(dataDirectory: String) {
    self.dataDirectory = dataDirectory
  }

  /// `mtls`, `tls` or `plaintext`, with `+oidc` when bearer tokens are accepted (recorded in
  /// `gateway.configured`, so switching OIDC on or off is in the log).
  var authModeName: String {
    let base = GatewayAuthDescription(security: security, oidc: nil).transport
    return oidc == nil ? base : base + "+oidc"
  }
}
