import Foundation
import NIOCore
import NIOSSL
import SandboxProtocol
import Synchronization

/// The supervisor's network enforcement, wired together: the policy holder (``ProxyPolicy``), the
/// caller resolver (``CallerResolver``), the sandbox CA and upstream trust (``ProxyTLS``), the proxy
/// (``PolicyProxy``) listening on the launch's `proxyAddress`, the denial reporter
/// (``DenialReporter``) and the credential substitution reporter (``SubstitutionReporter``).
struct NetworkEnforcement: Sendable {
  let policy: ProxyPolicy
  let denials: DenialReporter
  let substitutions: SubstitutionReporter
  let proxy: PolicyProxy

  /// The trust files written for workloads (nil until the CA exists, or when it could not be written).
  static var trustFiles: (ca: String, bundle: String)? { written.withLock { $0 } }
  private static let written = Mutex<(ca: String, bundle: String)?>(nil)

  /// Starts the proxy when `launch` asks for confinement; nil when it does not.
  /// - Throws: when the namespace cannot be examined or the proxy address cannot be bound (the
  ///   supervisor then exits: a sandbox never runs with a confinement it cannot enforce).
  /// - Parameter privateNetwork: the namespace the supervisor created itself (a gateway without root):
  ///   the proxy serves its listening socket instead of binding `proxyAddress` on the host side.
  static func start(_ launch: SupervisorLaunch, privateNetwork: PrivateNetwork? = nil, sandboxID: String, logs: LogPusher) async throws -> NetworkEnforcement? {
    guard let ns = launch.networkNamespacePath, let address = launch.proxyAddress else { return nil }
    guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
      throw CallerResolver.ResolveError(message: "malformed proxy address \(address)")
    }
    let host = String(address[..<colon])
    let denials = DenialReporter(sandboxID: sandboxID, logs: logs)
    let policy = ProxyPolicy { c, why in
      denials.record(method: "CLOSE", host: c.host, port: c.port, binary: c.binary, reason: "open connection closed: \(why)")
    }
    let resolver = try CallerResolver(namespacePath: ns, diag: privateNetwork?.diag)
    let tls = makeTLS(logs)
    let substitutions = SubstitutionReporter(sandboxID: sandboxID, logs: logs)
    let proxy = PolicyProxy(
      policy: policy, resolver: resolver, tls: tls,
      onDenied: { d in denials.record(method: d.method, host: d.host, port: d.port, binary: d.binary, reason: d.reason) },
      onSubstituted: { s in substitutions.record(keys: s.keys, host: s.host, port: s.port, binary: s.binary) })
    if let privateNetwork {
      proxy.start(boundSocket: privateNetwork.listenSocket)
    } else {
      try proxy.start(host: host, port: port)
    }
    let lookup = resolver.diag != nil ? "sock_diag" : "the /proc socket tables (\(resolver.diagProblem ?? "no sock_diag"))"
    let kind = privateNetwork != nil ? "private namespace without root: loopback only, the proxy's socket inside it" : "veth pair + nftables"
    logs.log(
      "network policy proxy listening on \(address) (namespace \(ns), \(kind)); callers identified through \(lookup); all egress denied until a policy loads")
    return NetworkEnforcement(policy: policy, denials: denials, substitutions: substitutions, proxy: proxy)
  }

  /// Starts what was kept off the path to READY (issue 14: the upstream TLS context, ~7 ms of CPU per
  /// sandbox start on 2 cores, competed with the supervisor's connection to the gateway). Called once the
  /// gateway accepted the first session; idempotent.
  func startDeferredWork() { proxy.tlsSlot.start() }

  /// Generates the sandbox CA and writes its trust files now (a workload started after READY finds them);
  /// the upstream TLS context is made in the background (``BackgroundValue``) once the sandbox is READY
  /// (``startDeferredWork()``) or at the first inspected connection, whichever comes first. The value is nil
  /// (logged at ERROR) when either fails: the proxy then refuses every connection that needs inspection (fail
  /// closed).
  static func makeTLS(_ logs: LogPusher) -> BackgroundValue<ProxyTLS?> {
    let ca: SandboxCA
    let files: (ca: String, bundle: String)
    do {
      ca = try SandboxCA()
      files = try ca.writeTrustFiles(directory: SandboxProtocol.trustDirectory, systemBundle: SandboxCA.systemBundle())
    } catch {
      logs.log("TLS termination disabled, L7 endpoints will be refused: \(error)", level: "ERROR")
      return BackgroundValue { nil }
    }
    written.withLock { $0 = files }
    return BackgroundValue(startNow: false) {
      let extra = FileManager.default.fileExists(atPath: SandboxProtocol.upstreamTrustFile) ? SandboxProtocol.upstreamTrustFile : nil
      do {
        let tls = try ProxyTLS(ca: ca, extraUpstreamRoots: extra)
        logs.log("TLS termination enabled: ephemeral sandbox CA generated (\(files.ca))" + (extra.map { "; upstream also trusts \($0)" } ?? ""))
        return tls
      } catch {
        logs.log("TLS termination disabled, L7 endpoints will be refused: \(error)", level: "ERROR")
        return nil
      }
    }
  }
}

/// TLS for inspected connections: the sandbox CA (client side) and the upstream client context that
/// verifies upstream servers against the system roots (plus the operator's extra roots, the analogue
/// of upstream's operator-installed CAs in the supervisor's trust store), ALPN http/1.1.
struct ProxyTLS: Sendable {
  let ca: SandboxCA
  let upstream: NIOSSLContext

  /// - Throws: when the upstream context cannot be built (e.g. an unreadable extra roots file).
  init(ca: SandboxCA, extraUpstreamRoots: String?) throws {
    self.ca = ca
    var config = TLSConfiguration.makeClientConfiguration()
    config.trustRoots = .default
    if let extraUpstreamRoots {
      config.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(extraUpstreamRoots))]
    }
    config.applicationProtocols = ["http/1.1"]
    upstream = try NIOSSLContext(configuration: config)
  }
}
