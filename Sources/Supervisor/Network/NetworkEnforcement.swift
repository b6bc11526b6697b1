import Foundation
import NIOCore
import SandboxProtocol

/// The supervisor's network enforcement, wired together: the policy holder (``ProxyPolicy``), the
/// caller resolver (``CallerResolver``), the proxy (``PolicyProxy``) listening on the launch's
/// `proxyAddress`, and the denial reporter (``DenialReporter``).
struct NetworkEnforcement: Sendable {
  let policy: ProxyPolicy
  let denials: DenialReporter
  let proxy: PolicyProxy
  let channel: Channel

  /// Starts the proxy when `launch` asks for confinement; nil when it does not.
  /// - Throws: when the namespace cannot be examined or the proxy address cannot be bound (the
  ///   supervisor then exits: a sandbox never runs with a confinement it cannot enforce).
  static func start(_ launch: SupervisorLaunch, sandboxID: String, logs: LogPusher) async throws -> NetworkEnforcement? {
    guard let ns = launch.networkNamespacePath, let address = launch.proxyAddress else { return nil }
    guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
      throw CallerResolver.ResolveError(message: "malformed proxy address \(address)")
    }
    let host = String(address[..<colon])
    let denials = DenialReporter(sandboxID: sandboxID, logs: logs)
    let policy = ProxyPolicy { c, why in
      denials.record(method: "CLOSE", host: c.host, port: c.port, binary: c.binary, reason: "open connection closed: \(why)")
    }
    let resolver = try CallerResolver(namespacePath: ns)
    let proxy = PolicyProxy(policy: policy, resolver: resolver) { d in
      denials.record(method: d.method, host: d.host, port: d.port, binary: d.binary, reason: d.reason)
    }
    let channel = try await proxy.start(host: host, port: port)
    let lookup = resolver.diag != nil ? "sock_diag" : "the /proc socket tables (\(resolver.diagProblem ?? "no sock_diag"))"
    logs.log("network policy proxy listening on \(address) (namespace \(ns)); callers identified through \(lookup); all egress denied until a policy loads")
    return NetworkEnforcement(policy: policy, denials: denials, proxy: proxy, channel: channel)
  }
}
