import NIOCore
import NIOHTTP1
import NIOSSL
import NIOTLS
import RelayTransport
import X509

/// Decides per connection whether it carries gRPC (HTTP/2) or HTTP/1.1, after TLS if any
/// (swift-build-notes.md §6.3). The gRPC pipeline is installed behind it eagerly, because
/// grpc-swift-nio-transport's connection configurator must run in the child initializer (§6.2).
///
/// - Holds the decrypted inbound bytes and the gRPC side's outbound writes (its SETTINGS preamble)
///   until it can decide.
/// - The 24-byte HTTP/2 client connection preface (RFC 9113 §3.4) → gRPC: releases the held writes,
///   replays the bytes and leaves the pipeline. If the connection is plaintext on a TLS port
///   (``markPlaintextOnTLSPort()``), the connection is closed instead: plaintext gRPC would bypass mTLS
///   (reported as a ``HandshakeRefusal``).
/// - Anything else → HTTP/1.1: drops the held gRPC writes, inserts the HTTP/1.1 handlers and an
///   ``OutboundGate`` in front of the idle gRPC handlers, replays the bytes and leaves.
/// - Undecided connections are closed when the handshake deadline passes (a silent or slow client)
///   and on `ChannelShouldQuiesceEvent`, so they never hold up graceful shutdown (§7).
/// - On `TLSUserEvent.handshakeCompleted` it records the verified peer certificate in the
///   ``PeerCertificateRegistry``.
final class ProtocolSniffer: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  typealias OutboundIn = Any
  typealias OutboundOut = Any

  /// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
  static let http2Preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

  /// Shared per-listener settings.
  struct Settings: Sendable {
    var endpoints: HTTPEndpoints
    var registry: PeerCertificateRegistry?
    /// How long a connection may stay undecided (TLS handshake plus first bytes).
    var handshakeTimeout: TimeAmount
    /// How long an HTTP/1.1 keep-alive connection may stay silent.
    var httpIdleTimeout: TimeAmount
    /// Where clients refused before any RPC are reported (issue 12); nil = not recorded.
    var refusals: HandshakeRefusalSink? = nil
    /// The gateway CA (mTLS), to tell a foreign client certificate from an expired one of ours.
    var trustedCA: Certificate? = nil
  }

  private enum State { case undecided, grpc, http }

  private let settings: Settings
  private var state = State.undecided
  private var buffered: ByteBuffer?
  private var heldWrites: [(NIOAny, EventLoopPromise<Void>?)] = []
  private var flushHeld = false
  private var deadline: Scheduled<Void>?
  private var plaintextOnTLSPort = false

  init(settings: Settings) {
    self.settings = settings
  }

  /// Called by ``TLSDetector`` when a TLS port received plaintext: only HTTP/1.1 probes are allowed.
  func markPlaintextOnTLSPort() {
    plaintextOnTLSPort = true
  }

  func handlerAdded(context: ChannelHandlerContext) {
    if context.channel.isActive { startDeadline(context: context) }
  }

  func channelActive(context: ChannelHandlerContext) {
    startDeadline(context: context)
    context.fireChannelActive()
  }

  func channelInactive(context: ChannelHandlerContext) {
    cancelDeadline()
    context.fireChannelInactive()
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    cancelDeadline()
  }

  private func startDeadline(context: ChannelHandlerContext) {
    guard deadline == nil, state == .undecided else { return }
    let channel = context.channel
    deadline = context.eventLoop.assumeIsolated().scheduleTask(in: settings.handshakeTimeout) {
      channel.close(promise: nil)
    }
  }

  private func cancelDeadline() {
    deadline?.cancel()
    deadline = nil
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard state == .undecided else {
      context.fireChannelRead(data)
      return
    }
    var incoming = unwrapInboundIn(data)
    if buffered == nil {
      buffered = incoming
    } else {
      buffered!.writeBuffer(&incoming)
    }
    let bytes = buffered!.readableBytesView
    let n = min(bytes.count, Self.http2Preface.count)
    if !bytes.prefix(n).elementsEqual(Self.http2Preface.prefix(n)) {
      switchToHTTP(context: context)
    } else if n == Self.http2Preface.count {
      switchToGRPC(context: context)
    }
  }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    if state == .undecided {
      heldWrites.append((data, promise))
    } else {
      context.write(data, promise: promise)
    }
  }

  func flush(context: ChannelHandlerContext) {
    if state == .undecided {
      flushHeld = true
    } else {
      context.flush()
    }
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if case .handshakeCompleted = event as? TLSUserEvent {
      recordPeerCertificate(context: context)
    } else if event is ChannelShouldQuiesceEvent, state == .undecided {
      context.close(promise: nil)
      return
    }
    context.fireUserInboundEventTriggered(event)
  }

  private func recordPeerCertificate(context: ChannelHandlerContext) {
    guard let registry = settings.registry,
      let peer = try? context.pipeline.syncOperations.nioSSL_peerCertificate(),
      let der = try? peer.toDERBytes(),
      let certificate = try? Certificate(derEncoded: der)
    else { return }
    registry.register(certificate, for: context.channel)
  }

  private func switchToGRPC(context: ChannelHandlerContext) {
    guard !plaintextOnTLSPort else {
      settings.refusals?(
        HandshakeRefusal(
          identity: HandshakeRefusal.unauthenticated, peer: PeerCertificateRegistry.remotePeerKey(context.channel) ?? "unknown",
          reason: HandshakeRefusal.Reason.plaintextGRPC))
      context.close(promise: nil)
      return
    }
    state = .grpc
    cancelDeadline()
    // Whole HTTP/2 frames per read for the HTTP/2 handler (SSH tunnel throughput, issue 11; see HTTP2FrameAligner).
    do {
      try context.pipeline.syncOperations.addHandler(HTTP2FrameAligner(prefaceLength: HTTP2FrameAligner.serverPrefaceLength), position: .after(self))
    } catch {
      context.close(promise: nil)
      return
    }
    let writes = heldWrites
    heldWrites = []
    for (data, promise) in writes { context.write(data, promise: promise) }
    if flushHeld || !writes.isEmpty { context.flush() }
    replayAndLeave(context: context)
  }

  private func switchToHTTP(context: ChannelHandlerContext) {
    state = .http
    cancelDeadline()
    let writes = heldWrites
    heldWrites = []
    for (_, promise) in writes { promise?.succeed(()) }
    do {
      let handlers: [any ChannelHandler] = [
        IdleStateHandler(readTimeout: settings.httpIdleTimeout),
        HTTPResponseEncoder(),
        ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)),
        HTTPServerPipelineHandler(),
        HTTPServerProtocolErrorHandler(),
        HTTPRequestHandler(endpoints: settings.endpoints, restricted: plaintextOnTLSPort),
        OutboundGate(),
      ]
      try context.pipeline.syncOperations.addHandlers(handlers, position: .after(self))
    } catch {
      context.close(promise: nil)
      return
    }
    replayAndLeave(context: context)
  }

  private func replayAndLeave(context: ChannelHandlerContext) {
    if let bytes = buffered {
      buffered = nil
      context.fireChannelRead(wrapInboundOut(bytes))
    }
    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
  }
}

/// Placed between the HTTP/1.1 handlers and the idle gRPC handlers of an HTTP/1.1 connection: swallows
/// (and succeeds) every write and flush from the gRPC side, so no HTTP/2 frame (keepalive PING, GOAWAY)
/// reaches an HTTP/1.1 client, while `close` passes through.
final class OutboundGate: ChannelOutboundHandler, RemovableChannelHandler {
  typealias OutboundIn = Any

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    promise?.succeed(())
  }

  func flush(context: ChannelHandlerContext) {}
}

/// On a TLS port that also admits plaintext HTTP/1.1 probes: a first byte of 0x16 (a TLS handshake
/// record, RFC 8446 §5.1) inserts the `NIOSSLServerHandler`; anything else marks the connection as
/// plaintext, where ``ProtocolSniffer`` allows HTTP/1.1 health probes only and refuses gRPC.
final class TLSDetector: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer

  private let sslContext: NIOSSLContext

  init(sslContext: NIOSSLContext) {
    self.sslContext = sslContext
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = unwrapInboundIn(data)
    guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
    let sync = context.pipeline.syncOperations
    do {
      if first == 0x16 {
        try sync.addHandler(NIOSSLServerHandler(context: sslContext), position: .after(self))
      } else {
        try sync.handler(type: ProtocolSniffer.self).markPlaintextOnTLSPort()
      }
    } catch {
      context.close(promise: nil)
      return
    }
    context.fireChannelRead(data)
    sync.removeHandler(context: context, promise: nil)
  }
}
