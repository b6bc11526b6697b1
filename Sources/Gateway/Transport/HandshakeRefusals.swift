import Foundation
import NIOCore
import NIOSSL
import NIOTLS
import X509

/// A client the gateway refused before any RPC: during the TLS handshake (no, an unknown or an expired client
/// certificate, a broken handshake) or because it spoke plaintext gRPC on the TLS port (issue 12:
/// authentication outcomes). Reported to the ``RefusalAggregator`` as an `audit.access_refused` with RPC
/// ``rpc`` and code UNAUTHENTICATED, so a handshake flood costs at most one event per (identity, reason)
/// per window. The identity is never taken from the client: every client whose certificate failed
/// verification is ``unverified`` (the subject it claimed is only a bounded sample in the record), so a client
/// forging a new subject per handshake still costs one event per reason and window.
public struct HandshakeRefusal: Sendable, Equatable {
  /// The fixed RPC marker of these refusals (no RPC was reached).
  public static let rpc = "tls-handshake"
  /// The status code they are recorded with.
  public static let code = "UNAUTHENTICATED"
  /// Identity recorded without a certificate.
  public static let unauthenticated = "unauthenticated"
  /// Identity recorded for every client whose certificate failed verification, whatever it claimed.
  public static let unverified = "unverified"

  /// ``unauthenticated`` or ``unverified``: a fixed set, never chosen by the client.
  public var identity: String
  /// The subject (RFC 4514) of the certificate the client presented, as presented (any length, any
  /// characters: the aggregator counts distinct claims and keeps a ``ClaimedText`` sample of the first);
  /// nil without a certificate.
  public var claimedSubject: String?
  /// Remote address in `ServerContext.remotePeer` form (`ipv4:127.0.0.1:50000`).
  public var peer: String
  /// One of the ``Reason`` texts, with BoringSSL's reason token where it adds detail.
  public var reason: String

  /// The documented reasons (README "Audit"). Each is a distinct aggregation key.
  public enum Reason {
    /// The client sent no certificate while mTLS requires one.
    public static let noCertificate = "no client certificate"
    /// The certificate does not chain to the gateway CA.
    public static let unknownCA = "client certificate not issued by the gateway CA"
    /// The certificate's validity period has ended.
    public static let expired = "client certificate expired"
    /// The certificate's validity period has not begun.
    public static let notYetValid = "client certificate not yet valid"
    /// CA-signed, in its validity period, yet refused (e.g. key usage); followed by BoringSSL's token.
    public static let rejected = "client certificate rejected"
    /// Anything else the gateway's TLS stack refused (no shared cipher or version, not TLS at all, …);
    /// followed by BoringSSL's token, e.g. `protocol error: WRONG_VERSION_NUMBER`.
    public static let protocolError = "protocol error"
    /// The client ended the handshake with its own alert, typically because it does not trust the gateway's
    /// certificate (curl without `--cacert`); followed by the token: `TLSV1_ALERT_UNKNOWN_CA` (TLS 1.2), or
    /// `BAD_PACKET_LENGTH` for an OpenSSL 3 client in TLS 1.3, whose alert arrives unencrypted where the
    /// gateway already expects encrypted records. Recorded apart from the gateway's own refusals: a client that
    /// cannot trust the gateway is worth seeing, and it never authenticated.
    public static let clientAborted = "client aborted the handshake"
    /// Plaintext HTTP/2 (gRPC) on a TLS port that admits plaintext health probes: refused, since it would
    /// bypass mTLS (``ProtocolSniffer``).
    public static let plaintextGRPC = "protocol error: plaintext gRPC on the TLS port"
  }
}

/// Called for every refused client, on an event loop: must not block (the gateway hands the refusal to the
/// ``RefusalAggregator`` actor).
public typealias HandshakeRefusalSink = @Sendable (HandshakeRefusal) -> Void

/// Decides whether a failed handshake is a refusal and why.
///
/// Never recorded (so no probe and no authenticated client is): a client that closes before or during the
/// handshake without an alert (`EOF during handshake`: TCP health probes, port scanners, a client giving up)
/// and socket errors (connection reset). A client that ends the handshake with its own alert is recorded
/// under its own reason, ``HandshakeRefusal/Reason/clientAborted``.
enum HandshakeRefusalClassifier {
  /// The reason to record, or nil when the failure is not a refusal (see the type's documentation).
  /// - Parameters:
  ///   - error: what `NIOSSLHandler` fired.
  ///   - certificate: the leaf the client presented, if any (still readable right after the failure).
  ///   - ca: the gateway CA, to tell a foreign certificate from one of ours.
  static func reason(for error: any Error, certificate: Certificate?, ca: Certificate?, now: Date = Date()) -> String? {
    guard case .handshakeFailed(let ssl)? = error as? NIOSSLError else { return nil }
    let stack: [BoringSSLInternalError]
    switch ssl {
    case .sslError(let s), .unknownError(let s): stack = s
    default: return nil
    }
    let tokens = stack.map { token($0.description) }
    guard let first = tokens.first(where: { !$0.isEmpty }) else { return nil }
    if tokens.contains("EOF during handshake") { return nil }
    if let alert = tokens.first(where: { $0.contains("_ALERT_") || $0 == "BAD_PACKET_LENGTH" }) {
      return "\(HandshakeRefusal.Reason.clientAborted): \(alert)"
    }
    if tokens.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") { return HandshakeRefusal.Reason.noCertificate }
    if tokens.contains("CERTIFICATE_VERIFY_FAILED") {
      guard let certificate else { return "\(HandshakeRefusal.Reason.rejected): CERTIFICATE_VERIFY_FAILED" }
      if let ca, !issued(certificate, by: ca) { return HandshakeRefusal.Reason.unknownCA }
      if certificate.notValidAfter < now { return HandshakeRefusal.Reason.expired }
      if certificate.notValidBefore > now { return HandshakeRefusal.Reason.notYetValid }
      return "\(HandshakeRefusal.Reason.rejected): CERTIFICATE_VERIFY_FAILED"
    }
    return "\(HandshakeRefusal.Reason.protocolError): \(first)"
  }

  /// BoringSSL's reason token of one error-stack entry: `Error: 268435581 error:1000007d:SSL routines:
  /// OPENSSL_internal:CERTIFICATE_VERIFY_FAILED at …/handshake.cc:320` → `CERTIFICATE_VERIFY_FAILED`; a
  /// synthetic entry (`Error:  EOF during handshake`) → its text.
  static func token(_ description: String) -> String {
    guard let start = description.range(of: "error:") else {
      var text = Substring(description)
      if text.hasPrefix("Error:") { text = text.dropFirst("Error:".count) }
      return text.trimmingCharacters(in: .whitespaces)
    }
    let fields = description[start.lowerBound...].split(separator: ":", maxSplits: 4, omittingEmptySubsequences: false)
    guard fields.count == 5 else { return description }
    let rest = fields[4]
    return String(rest.split(separator: " ", maxSplits: 1).first ?? rest)
  }

  /// Whether `ca` signed `certificate` (issuer name and signature).
  static func issued(_ certificate: Certificate, by ca: Certificate) -> Bool {
    certificate.issuer == ca.subject && ca.publicKey.isValidSignature(certificate.signature, for: certificate)
  }

  /// The identity of a refused client: ``HandshakeRefusal/unverified`` when it presented a certificate (which
  /// failed verification), else ``HandshakeRefusal/unauthenticated``; never the subject it claims.
  static func identity(_ certificate: Certificate?) -> String {
    certificate == nil ? HandshakeRefusal.unauthenticated : HandshakeRefusal.unverified
  }
}

/// Sits right behind the `NIOSSLServerHandler` of a TLS connection until the handshake completes (then it
/// leaves the pipeline): turns a handshake the gateway refused into a ``HandshakeRefusal`` for the sink.
final class HandshakeRefusalObserver: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer

  private let sink: HandshakeRefusalSink
  private let ca: Certificate?
  private var reported = false

  init(sink: @escaping HandshakeRefusalSink, ca: Certificate?) {
    self.sink = sink
    self.ca = ca
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if !reported {
      let presented = (try? context.pipeline.syncOperations.nioSSL_peerCertificate())
        .flatMap { $0 }.flatMap { try? Certificate(derEncoded: $0.toDERBytes()) }
      if let reason = HandshakeRefusalClassifier.reason(for: error, certificate: presented, ca: ca) {
        reported = true  // one refusal per connection (NIOSSL may fire more than one error)
        let peer = PeerCertificateRegistry.remotePeerKey(context.channel) ?? "unknown"
        sink(
          HandshakeRefusal(
            identity: HandshakeRefusalClassifier.identity(presented), claimedSubject: presented.map { "\($0.subject)" }, peer: peer,
            reason: reason))
      }
    }
    context.fireErrorCaught(error)
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    context.fireUserInboundEventTriggered(event)
    if case .handshakeCompleted = event as? TLSUserEvent {
      context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
  }
}
