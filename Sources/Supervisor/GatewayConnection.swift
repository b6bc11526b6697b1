import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOSSL
import OpenShellAPI
import RelayTransport
import SandboxProtocol

/// The supervisor's configuration, from the environment the driver set (SandboxProtocol).
struct SupervisorConfig {
  var sandboxID: String
  var endpoint: String
  var caPath: String?
  var certPath: String?
  var keyPath: String?
  var token: String
  var launch: SupervisorLaunch

  static func fromEnvironment() throws -> SupervisorConfig {
    let env = ProcessInfo.processInfo.environment
    guard let id = env[SandboxProtocol.envSandboxID], !id.isEmpty, let endpoint = env[SandboxProtocol.envEndpoint], !endpoint.isEmpty else {
      throw SpawnError("\(SandboxProtocol.envSandboxID) and \(SandboxProtocol.envEndpoint) must be set (the gateway's compute driver starts openshell-sandbox)")
    }
    var launch = SupervisorLaunch(command: [], environment: [:], confinement: nil, instanceID: UUID().uuidString.lowercased())
    if let path = env[SandboxProtocol.envLaunchFile], let data = FileManager.default.contents(atPath: path) {
      launch = try JSONDecoder().decode(SupervisorLaunch.self, from: data)
    }
    let token =
      env[SandboxProtocol.envTokenFile].flatMap { FileManager.default.contents(atPath: $0) }
      .map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
    return SupervisorConfig(
      sandboxID: id, endpoint: endpoint, caPath: env[SandboxProtocol.envTLSCA], certPath: env[SandboxProtocol.envTLSCert],
      keyPath: env[SandboxProtocol.envTLSKey], token: token, launch: launch)
  }

  /// Metadata sent with every call: the sandbox token, also next to a client certificate. A gateway that
  /// does not verify client certificates (`--disable-gateway-auth`) sees no certificate and identifies
  /// the supervisor by the token alone (with OIDC on, a call without either is refused); a gateway that
  /// verifies the certificate ignores the token.
  var metadata: Metadata {
    var m = Metadata()
    if !token.isEmpty { m.addString(token, forKey: SandboxProtocol.tokenHeader) }
    return m
  }

  func makeTransport() throws -> HTTP2ClientTransport.Posix {
    guard let url = URLComponents(string: endpoint), let host = url.host, let port = url.port else {
      throw SpawnError("bad endpoint \(endpoint)")
    }
    let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
    let security: HTTP2ClientTransport.Posix.TransportSecurity
    if url.scheme == "http" {
      security = .plaintext
    } else {
      // The gateway's own CA only: never the system's trust roots (the driver always writes ca.crt).
      // Full verification: the chain and the name dialled (the endpoint's host, as a DNS or IP SAN;
      // the gateway's server certificate names the address it gives supervisors). Issue 16, TLS.
      guard let caPath else {
        throw SpawnError("\(endpoint) is https but \(SandboxProtocol.envTLSCA) is not set: refusing to trust the system's roots for the gateway")
      }
      let roots: TLSConfig.TrustRootsSource = .certificates([.file(path: caPath, format: .pem)])
      if let certPath, let keyPath {
        security = .mTLS(certificateChain: [.file(path: certPath, format: .pem)], privateKey: .file(path: keyPath, format: .pem)) { c in
          c.trustRoots = roots
          c.serverCertificateVerification = .fullVerification
        }
      } else {
        security = .tls { c in
          c.trustRoots = roots
          c.serverCertificateVerification = .fullVerification
        }
      }
    }
    let config = HTTP2ClientTransport.Posix.Config.defaults { c in
      // Reconnect quickly after a gateway restart (READY again within about a second).
      c.backoff = .init(initial: .milliseconds(100), max: .seconds(1), multiplier: 1.6, jitter: 0.1)
      c.connection.keepalive = .init(time: .seconds(10), timeout: .seconds(20), allowWithoutCalls: true)
      // Whole HTTP/2 frames per read: relay streams (SSH tunnels) otherwise cost a page fault per 4 KiB.
      c.channelDebuggingCallbacks.onCreateTCPConnection = { HTTP2FrameAligner.install(on: $0) }
    }
    // IP literals as IP targets: a DNS target would put the IP into TLS SNI, which TLS forbids.
    if bare.contains(":") {
      return try HTTP2ClientTransport.Posix(target: .ipv6(address: bare, port: port), transportSecurity: security, config: config)
    }
    if bare.allSatisfy({ $0.isNumber || $0 == "." }) {
      return try HTTP2ClientTransport.Posix(target: .ipv4(address: bare, port: port), transportSecurity: security, config: config)
    }
    return try HTTP2ClientTransport.Posix(target: .dns(host: bare, port: port), transportSecurity: security, config: config)
  }

  /// A failed session in words: a refused gateway certificate says why (typed NIOSSL errors under the
  /// transport's status), anything else is the error's own description.
  func describeConnectionError(_ error: any Error) -> String {
    var next: (any Error)? = error
    var depth = 0
    while let current = next, depth < 16 {
      if let x = current as? NIOSSLExtraError, x == .failedToValidateHostname {
        return
          "the gateway's certificate does not name the host of \(SandboxProtocol.envEndpoint) (\(endpoint)); TLS host name verification refused the connection"
      }
      if let x = current as? NIOSSLError, case .handshakeFailed = x {
        return "the gateway's certificate was refused (\(x)); it must be signed by the CA in \(SandboxProtocol.envTLSCA)"
      }
      next = (current as? RPCError)?.cause ?? (current as? RuntimeError)?.cause
      depth += 1
    }
    return "\(error)"
  }
}
