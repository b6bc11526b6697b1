import Foundation
import SandboxConfinement

/// What the gateway and the in-sandbox supervisor (`openshell-sandbox`) agree on.
///
/// ## Start-up (local driver)
/// The driver starts the supervisor inside the sandbox's namespaces with these environment variables
/// (names follow OpenShell's, openshell-behavior.md §5.1) and a private, read-only directory mounted at
/// ``credentialsDirectory`` holding the sandbox's own client certificate (`tls.crt`/`tls.key`, issued by
/// the gateway CA for `CN=sandbox:<id>, OU=sandbox`), the CA (`ca.crt`), the sandbox token (`token`,
/// used only when the gateway does not verify client certificates) and `launch.json`
/// (``SupervisorLaunch``: the main command, environment and the workloads' ``ConfinementPlan``).
///
/// ## Supervisor → gateway RPCs (all checked against the caller's own sandbox id)
/// - `ConnectSupervisor` (bidi, long-lived): `SupervisorHello{sandbox_id, instance_id}` first; the
///   gateway answers `SessionAccepted` and the sandbox becomes READY. The gateway sends `RelayOpen` to
///   ask for a relay channel. The supervisor reconnects with backoff (200 ms doubling to 1 s) whenever the
///   stream ends, so a restarted gateway sees it again within about a second.
/// - `RelayStream` (bidi, one per channel, dialled by the supervisor): first frame `RelayInit{channel_id}`.
/// - `PushSandboxLogs` (client stream): batches of log lines (its own and the main process's output).
/// - `ReportMainProcessExit`: the main process's exit code.
///
/// ## Departure from OpenShell: exec over the relay
/// OpenShell runs SSH over relay channels and executes commands through the sandbox's SSH server.
/// We have no SSH server yet, so for `RelayOpen.service_id == "exec"` each `RelayFrame.data` carries
/// exactly one serialized protobuf message of the public contract: the gateway's first data frame is
/// the `ExecSandboxRequest` (fields resolved by the gateway), and the supervisor answers with
/// `ExecSandboxEvent` frames (stdout/stderr chunks as produced, then exactly one `exit`), then ends the
/// stream. The gateway ends the channel (its `RelayStream` call returns) once it is done with it: after
/// the `exit`, or early when the ExecSandbox caller went away (cancelled, deadline passed); the
/// supervisor then kills the command's process group if it still runs, as it does when the relay breaks.
public enum SandboxProtocol {
  /// Environment variable with the sandbox id the supervisor reports in `SupervisorHello` (required).
  public static let envSandboxID = "OPENSHELL_SANDBOX_ID"
  /// Environment variable with the sandbox's name (passed on to workload processes).
  public static let envSandboxName = "OPENSHELL_SANDBOX"
  /// `https://127.0.0.1:PORT` (TLS/mTLS) or `http://127.0.0.1:PORT` (plaintext).
  public static let envEndpoint = "OPENSHELL_ENDPOINT"
  /// Environment variable: path of the gateway CA certificate (`ca.crt` in ``credentialsDirectory``);
  /// required for an `https` endpoint (the supervisor never falls back to the system roots).
  public static let envTLSCA = "OPENSHELL_TLS_CA"
  /// Environment variable: path of the sandbox's client certificate (`tls.crt`), set when the gateway speaks TLS.
  public static let envTLSCert = "OPENSHELL_TLS_CERT"
  /// Environment variable: path of the private key of that certificate (`tls.key`), set with `tls.crt`.
  public static let envTLSKey = "OPENSHELL_TLS_KEY"
  /// Environment variable: path of the file holding the sandbox token (`token`), sent in ``tokenHeader``.
  public static let envTokenFile = "OPENSHELL_SANDBOX_TOKEN_FILE"
  /// Environment variable: path of `launch.json` (``SupervisorLaunch``).
  public static let envLaunchFile = "OPENSHELL_LAUNCH_FILE"
  /// gRPC metadata carrying the sandbox token (only consulted when the caller has no certificate).
  public static let tokenHeader = "x-openshell-sandbox-token"

  /// Mount point of the private credentials directory inside the sandbox.
  public static let credentialsDirectory = "/run/openshell"
  /// Where the supervisor binary is mounted inside the sandbox.
  public static let supervisorPath = "/opt/openshell/bin/openshell-sandbox"
  /// Where the launcher (`openshell-sandbox-launch`, which confines and starts every workload process)
  /// is mounted inside the sandbox; on the host it lives next to the supervisor binary.
  public static let launcherPath = "/opt/openshell/bin/openshell-sandbox-launch"
  /// File name of the launcher binary, next to the supervisor binary on the host.
  public static let launcherName = "openshell-sandbox-launch"
  /// The workspace mount point.
  public static let workspace = "/sandbox"

  /// Where the driver bind-mounts the sandbox's network namespace file (nsfs) inside the sandbox; the
  /// supervisor enters it (setns) for every workload process. Its own process stays on the host side.
  public static let networkNamespaceMount = "/run/openshell-netns"
  /// Where the sandbox's trust files live (a directory the driver bind-mounts writable for the
  /// supervisor, readable by workloads): the supervisor writes its ephemeral CA's certificate
  /// (`openshell-ca.pem`) and the system roots plus that CA (`ca-bundle.pem`) there at every start.
  /// OpenShell uses `/etc/openshell-tls`; our sandboxes see the host's `/etc` read-only, so it is here
  /// (not under `/run`, which stays 0700 so that workloads cannot even list `/run/openshell`).
  public static let trustDirectory = ConfinementPlan.trustDirectory
  /// Extra roots the proxy trusts for upstream TLS besides the system ones (PEM), when the operator
  /// configured some (`GatewayConfiguration.upstreamTrustFile`); absent otherwise.
  public static let upstreamTrustFile = credentialsDirectory + "/upstream-ca.pem"
  /// Port of the sandbox's policy proxy on the host side of its veth pair (OpenShell's default).
  public static let proxyPort: UInt16 = 3128

  /// The launcher's only environment variable: the descriptor (3) from which it reads the workload's
  /// environment (`KEY=VALUE\0`…). The launcher itself never runs with the workload's environment.
  public static let launchEnvironmentFDVariable = "OPENSHELL_LAUNCH_ENV_FD"

  /// `RelayOpen.service_id` for exec channels.
  public static let execService = "exec"
  /// `RelayOpen.service_id` (with `target.ssh`) for SSH channels: the supervisor starts the sandbox's
  /// SSH server for the channel and relays raw bytes (each `RelayFrame.data` is a slice of the SSH
  /// byte stream, in order); either side ending its stream ends the connection.
  public static let sshService = "ssh"
  /// `RelayOpen.service_id` for ExecSandboxInteractive channels. Each `RelayFrame.data` carries one
  /// serialized message: gateway → supervisor an `ExecSandboxInput` (first `start`, the request with
  /// its fields resolved by the gateway; then `stdin` chunks and `resize`), or an empty frame meaning
  /// "the caller's stdin ended"; supervisor → gateway `ExecSandboxEvent`s (output, then one `exit`).
  /// With `start.tty` the command runs on a new pseudo-terminal (its controlling terminal, window size
  /// `cols` × `rows`); its output is all `stdout`. The gateway ending its stream kills the command.
  public static let interactiveExecService = "exec-interactive"
  /// `RelayOpen.service_id` (with `target.tcp{port}`) for exposed services: the supervisor connects to
  /// 127.0.0.1:`port` inside the sandbox's network namespace and relays raw bytes (as for ``sshService``).
  /// Nothing listening there: the supervisor ends the stream without sending a byte.
  public static let serviceRelay = "service"
  /// `RelayOpen.service_id` (with `target.tcp{port}`) for ForwardTcp's `tcp` targets (port forwarding):
  /// relayed as ``serviceRelay``, but a port nobody listens on is answered with
  /// `RelayOpenResult{success: false, error}` on the ConnectSupervisor stream, so the gateway can refuse
  /// the ForwardTcp call with a status instead of an empty stream.
  public static let tcpForwardService = "tcp-forward"
  /// Exit code reported when `execution_timeout` expires (the process group was killed), as timeout(1).
  public static let timeoutExitCode: Int32 = 124
}

/// The supervisor's launch description, written by the driver as `launch.json`.
public struct SupervisorLaunch: Codable, Sendable {
  /// `spec.command` (empty = no main process; the sandbox just serves exec).
  public var command: [String]
  /// Environment for the main process and every exec (spec template env, then spec env).
  public var environment: [String: String]
  /// How every workload process is confined (user, Landlock, seccomp), fixed at start from the
  /// effective policy. nil (a launch description without it): the supervisor starts no workload.
  public var confinement: ConfinementPlan?
  /// A random id of this start of the sandbox (a new one per start).
  public var instanceID: String
  /// Path (inside the sandbox) of the network namespace every workload process must enter before it
  /// drops privileges (setns CLONE_NEWNET). nil only for launches written by drivers that do not confine
  /// the network; the local driver refuses to start a sandbox it cannot confine (LocalComputeDriver).
  public var networkNamespacePath: String?
  /// `host:port` of the sandbox's policy proxy (e.g. `10.200.0.1:3128`), reachable from inside the
  /// namespace; the supervisor listens there and the workload gets it as HTTP(S)_PROXY.
  public var proxyAddress: String?
  /// true: the driver could not make a namespace (a gateway without root); the supervisor creates a
  /// private one itself at start, with only `lo`, and serves the proxy at `127.0.0.1:3128` inside it
  /// (Supervisor `PrivateNetwork`); it then sets ``networkNamespacePath`` and ``proxyAddress``.
  /// nil/false: the driver's namespace (``networkNamespacePath``) or none.
  public var privateNetwork: Bool?

  /// A launch description with every field given (`networkNamespacePath`, `proxyAddress`, `privateNetwork`
  /// default to nil).
  public init(
    command: [String], environment: [String: String], confinement: ConfinementPlan?, instanceID: String,
    networkNamespacePath: String? = nil, proxyAddress: String? = nil, privateNetwork: Bool? = nil
  ) {
    self.privateNetwork = privateNetwork
    self.command = command
    self.environment = environment
    self.confinement = confinement
    self.instanceID = instanceID
    self.networkNamespacePath = networkNamespacePath
    self.proxyAddress = proxyAddress
  }
}
