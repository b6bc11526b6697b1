import Foundation
import NIOCore

extension ProxyRequestHandler {
  /// `CONNECT inference.local:443` (``InferenceRouter``): no network policy is consulted (OpenShell's
  /// proxy bypasses OPA for it); the connection is refused when it is not a CONNECT to port 443, when
  /// TLS termination is unavailable or when the gateway has no `inference.local` route. Otherwise the
  /// route's host is resolved (off the event loop) and the tunnel is inspected, each request going to
  /// the route. The caller's binary is identified for the denial records only.
  func routeInference(_ context: ChannelHandlerContext, _ head: ProxyRequestHead, peer: SocketAddress?, local: SocketAddress?) {
    let proxy = self.proxy
    func refuse(_ reason: String) {
      deny(context, head, PolicyProxy.Denied(binary: nil, reason: reason))
    }
    guard head.isConnect, head.port == 443 else { return refuse("inference.local is served over HTTPS only (CONNECT inference.local:443)") }
    guard proxy.tls != nil else { return refuse("TLS termination is unavailable in this sandbox (see its log)") }
    guard let route = InferenceRouter.currentRoute else {
      return refuse("no inference route is configured on the gateway (openshell inference set --provider NAME --model ID)")
    }
    proxy.pool.runIfActive(eventLoop: context.eventLoop) { () throws -> InspectedTarget in
      let endpoint = try InferenceRouter.endpoint(route)
      let addresses = try AddressGuard.resolve(endpoint.host)
      var binary: CallerBinary?
      if let peer, let local, let pip = peer.ipAddress.flatMap(IPAddress.init), let lip = local.ipAddress.flatMap(IPAddress.init),
        let pport = peer.port, let lport = local.port
      {
        binary = try? proxy.resolver.resolve(peer: (pip, pport), local: (lip, lport))
      }
      return InspectedTarget(
        host: endpoint.host, port: endpoint.port, addresses: addresses, binary: binary, tls: endpoint.tls,
        clientHost: InferenceRouter.host, inference: InferenceTarget(route: route, endpoint: endpoint))
    }.assumeIsolated().whenComplete { result in
      switch result {
      case .failure(let error): refuse("inference route unusable: \(error)")
      case .success(let target): self.inspect(context, head, target, generation: nil)
      }
    }
  }
}
