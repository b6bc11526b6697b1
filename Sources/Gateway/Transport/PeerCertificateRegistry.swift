import Foundation
import NIOCore
import Synchronization
import X509

/// Maps live connections to their verified client certificates.
///
/// grpc-swift-nio-transport's public `HTTP2ServerTransport.Custom` cannot attach a transport-specific
/// context, so `ServerContext.transportSpecific` is nil and the peer certificate is not available to
/// handlers (swift-build-notes.md §6.3 "Peer certificate lookup"). Instead the ``ProtocolSniffer``
/// records the certificate when the TLS handshake completes, keyed by the same string the transport
/// puts in `ServerContext.remotePeer` (`ipv4:<host>:<port>`, `ipv6:[<host>]:<port>`, `unix:<path>`),
/// and removes it when the connection closes.
public final class PeerCertificateRegistry: Sendable {
  private struct Entry: Sendable {
    var certificate: Certificate
    var identity: CallerIdentity
  }

  private let entries = Mutex<[String: Entry]>([:])

  /// An empty registry (no connection known).
  public init() {}

  /// The identity for the connection that `ServerContext.remotePeer` names; ``CallerIdentity/anonymous``
  /// when no verified certificate is known (no client certificate, TLS without client auth, plaintext).
  public func identity(forRemotePeer remotePeer: String) -> CallerIdentity {
    entries.withLock { $0[remotePeer]?.identity } ?? .anonymous
  }

  /// The verified client certificate of that connection, if any.
  public func certificate(forRemotePeer remotePeer: String) -> Certificate? {
    entries.withLock { $0[remotePeer]?.certificate }
  }

  /// Number of connections with a registered certificate (for tests and metrics).
  public var count: Int { entries.withLock { $0.count } }

  /// Records `certificate` for `channel` and removes it again when the channel closes.
  func register(_ certificate: Certificate, for channel: any Channel) {
    guard let key = Self.remotePeerKey(channel) else { return }
    let entry = Entry(certificate: certificate, identity: CallerIdentity(verifiedClientCertificate: certificate))
    entries.withLock { $0[key] = entry }
    channel.closeFuture.whenComplete { [self] _ in
      _ = self.entries.withLock { $0.removeValue(forKey: key) }
    }
  }

  /// The string grpc-swift-nio-transport 2.9.2 builds for `ServerContext.remotePeer`
  /// (`Channel+AddressInfo.swift`), reproduced with the same NIO accessors.
  static func remotePeerKey(_ channel: any Channel) -> String? {
    guard let address = channel.remoteAddress else { return nil }
    switch address {
    case .v4(let v4): return "ipv4:\(v4.host):\(address.port ?? 0)"
    case .v6(let v6): return "ipv6:[\(v6.host)]:\(address.port ?? 0)"
    case .unixDomainSocket:
      if let path = address.pathname, !path.isEmpty { return "unix:\(path)" }
      if let local = channel.localAddress?.pathname { return "unix:\(local)" }
      return nil
    }
  }
}
