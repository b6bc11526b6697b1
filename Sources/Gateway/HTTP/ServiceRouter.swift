import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import SandboxProtocol

/// Resolves a service URL (``ServiceURL``) to a relay channel to the sandbox's loopback service:
/// checks the caller and the exposure, then asks the sandbox's supervisor for a `service` relay
/// (``SandboxProtocol/serviceRelay``). Used by the HTTP/1.1 side of the gateway port (``ServiceForwarder``).
///
/// Who may call: on a mutual-TLS port, a client whose certificate the TLS handshake verified and
/// that is the operator or a user (a sandbox's identity is refused, 403); without client
/// certificates (`--disable-gateway-auth`, `--plaintext`) anyone who reaches the port, as for the
/// gRPC API. Plaintext HTTP on a TLS port (allowed for health probes) is refused (403).
public final class ServiceRouter: Sendable {
  let store: GatewayStore
  let hub: SupervisorHub
  let registry: PeerCertificateRegistry
  let requireCertificate: Bool

  /// - Parameter requireCertificate: the port is mutual TLS (a verified operator/user certificate is required).
  public init(store: GatewayStore, hub: SupervisorHub, registry: PeerCertificateRegistry, requireCertificate: Bool) {
    self.store = store
    self.hub = hub
    self.registry = registry
    self.requireCertificate = requireCertificate
  }

  /// An HTTP refusal: status and a one-line reason.
  struct Refusal: Error, Sendable {
    let status: Int
    let message: String
  }

  /// What a request reaches.
  struct Opened: Sendable {
    let channel: SupervisorHub.RelayChannel
    /// STRIP: the caller's `Authorization` header is removed.
    let stripAuthorization: Bool
    let sandboxID: String
    let port: UInt32
    let actor: String
  }

  /// The caller of a connection (by its remote peer key), or a refusal.
  func caller(remotePeer: String?) throws(Refusal) -> CallerIdentity {
    let identity = remotePeer.map { registry.identity(forRemotePeer: $0) } ?? .anonymous
    guard requireCertificate else { return identity }
    switch identity.kind {
    case .operator, .user: return identity
    case .sandbox: throw Refusal(status: 403, message: "sandbox identities may not call exposed services")
    case .anonymous: throw Refusal(status: 401, message: "a client certificate of this gateway is required")
    }
  }

  /// Finds the exposure and opens a relay to it.
  func open(workspace: String, sandbox: String, service: String, caller: CallerIdentity) async throws(Refusal) -> Opened {
    let state = await store.state
    let label = service.isEmpty ? "(unnamed)" : service
    guard let s = state.sandbox(named: sandbox, workspace: workspace) else {
      throw Refusal(status: 404, message: "no sandbox \(workspace)/\(sandbox)")
    }
    guard let e = s.serviceExposures.first(where: { $0.service == service }) else {
      throw Refusal(status: 404, message: "sandbox \(workspace)/\(sandbox) exposes no service \(label)")
    }
    guard s.phase == .ready else {
      throw Refusal(status: 503, message: "sandbox \(workspace)/\(sandbox) is not ready (phase \(s.phase.name.lowercased()))")
    }
    do {
      let channel = try await hub.openRelay(
        sandboxID: s.id, service: SandboxProtocol.serviceRelay,
        target: .tcp(
          .with {
            $0.host = "127.0.0.1"; $0.port = e.targetPort
          }),
        flowControl: true, timeout: .seconds(10))
      hub.logs.gateway(s.id, "service \(label) (port \(e.targetPort)) called by \(caller.actor)")
      return Opened(channel: channel, stripAuthorization: e.authorizationMode != 2, sandboxID: s.id, port: e.targetPort, actor: caller.actor)
    } catch {
      throw Refusal(status: 502, message: "the supervisor of sandbox \(workspace)/\(sandbox) is not reachable")
    }
  }
}
