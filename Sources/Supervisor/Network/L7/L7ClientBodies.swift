import NIOCore
import NIOHTTP1

/// The request bodies an ``L7ClientHandler`` collects before forwarding them: credential placeholders
/// resolved (``BodyCredentials``) or the payload hashed for a SigV4 signature (``SigV4Signer``); and
/// the switch to a byte relay after a WebSocket `101` (``WebSocketUpgrade``).
extension L7ClientHandler {
  /// Appends `bytes` to the body being collected (the state's copy is dropped first, so the buffer
  /// grows in place). Over its bound a rewrite body is sent as it came through a ``MarkerGuard``; a
  /// signed payload is refused (`413`).
  func collect(_ bytes: ByteBuffer) {
    switch state {
    case .rewriting(let head, var body):
      state = .idle
      body.append(contentsOf: bytes.readableBytesView)
      guard body.count > BodyCredentials.maxRewriteBytes else {
        state = .rewriting(head, body)
        return
      }
      // Over the buffer bound: sent as it came, through the guard (a placeholder refuses it).
      var g = MarkerGuard()
      do {
        let out = try g.pass(body)
        bodyGuard = g
        state = .forwarding
        sendHead(head)
        send(out)
      } catch {
        refuseBody(head.method.rawValue, error)
      }
    case .signing(let head, var body, let signer):
      state = .idle
      body.append(contentsOf: bytes.readableBytesView)
      guard body.count <= SigV4Signer.maxBodyBytes else {
        return refuseBody(
          head.method.rawValue,
          BodyCredentials.Refusal(
            status: 413, description: "a SigV4-signed payload is buffered up to \(SigV4Signer.maxBodyBytes) bytes; use sigv4:no_body for larger ones"))
      }
      state = .signing(head, body, signer)
    default: break
    }
  }

  /// Signs the collected request and sends it with its length.
  func finishSigned(_ head: HTTPRequestHead, _ body: [UInt8], _ signer: SigV4Signer) {
    var head = head
    do {
      try signer.sign(&head, body: body, values: ProviderEnvironmentAgent.values)
      headKeys.formUnion(signer.keys(ProviderEnvironmentAgent.values))
    } catch {
      let r = error as? SigV4Signer.Refusal
      return refuseBody(head.method.rawValue, BodyCredentials.Refusal(status: Int(r?.status.code ?? 500), description: r?.description ?? "\(error)"))
    }
    sendCollected(head, body)
  }

  /// Sends a collected request: de-chunked, with its `Content-Length`.
  /// - Parameter bodyKeys: the credential keys whose values the body now carries.
  private func sendCollected(_ head: HTTPRequestHead, _ body: [UInt8], bodyKeys: Set<String> = []) {
    var head = head
    let framed = head.headers.contains(name: "content-length") || head.headers.contains(name: "transfer-encoding")
    head.headers.remove(name: "transfer-encoding")
    head.headers.remove(name: "trailer")
    if framed || !body.isEmpty { head.headers.replaceOrAdd(name: "content-length", value: "\(body.count)") }
    state = .awaitingResponse
    sendHead(head, extraKeys: bodyKeys)
    send(body)
    upstreamConnection().send(.end(nil))
  }

  /// Collects the body of `head` (a `100 Continue` the client waits for is answered here).
  func startRewrite(_ head: HTTPRequestHead) {
    var head = head
    if head.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }), let context {
      head.headers.remove(name: "expect")
      context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
    }
    state = .rewriting(head, [])
  }

  /// Signs `head` now (unsigned payload, the body streams through the guard) or collects its body.
  func startSigning(_ head: HTTPRequestHead, _ signer: SigV4Signer) {
    var head = head
    if signer.signBody {
      if head.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }), let context {
        head.headers.remove(name: "expect")
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
      }
      state = .signing(head, [], signer)
      return
    }
    do {
      try signer.sign(&head, body: [], values: ProviderEnvironmentAgent.values)
      headKeys.formUnion(signer.keys(ProviderEnvironmentAgent.values))
    } catch {
      let r = error as? SigV4Signer.Refusal
      state = .rejecting(
        .init(status: r?.status ?? .internalServerError, message: "openshell: request to \(target.host):\(target.port) denied: \(r?.description ?? "\(error)")")
      )
      proxy.onDenied(.init(method: head.method.rawValue, host: target.host, port: target.port, binary: target.binary, reason: r?.description ?? "\(error)"))
      return
    }
    bodyGuard = MarkerGuard()
    state = .forwarding
    sendHead(head)
  }

  /// Resolves the collected body's placeholders and sends the request with its new length.
  func finishRewrite(_ head: HTTPRequestHead, _ body: [UInt8]) {
    do {
      var keys = Set<String>()
      let rewritten = try BodyCredentials.rewrite(
        body, contentType: head.headers.first(name: "content-type"), values: ProviderEnvironmentAgent.values, used: &keys)
      sendCollected(head, rewritten, bodyKeys: keys)
    } catch {
      refuseBody(head.method.rawValue, error)
    }
  }

  func send(_ bytes: [UInt8]) {
    guard !bytes.isEmpty, let context else { return }
    upstreamConnection().send(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes))))
  }

  /// Refuses the current request for its body (``BodyCredentials/Refusal``), recorded as a denial.
  func refuseBody(_ method: String?, _ error: Error) {
    bodyGuard = nil
    let r = error as? BodyCredentials.Refusal ?? .init(status: 500, description: "\(error)")
    let message = "openshell: request to \(target.host):\(target.port) denied: \(r.description)"
    proxy.onDenied(.init(method: method ?? "request", host: target.host, port: target.port, binary: target.binary, reason: r.description))
    fail(HTTPResponseStatus(statusCode: r.status), message)
  }

  /// After an accepted `101`: the connection becomes a byte relay (``WebSocketUpgrade``), on the next
  /// turn of the event loop (not from inside the upstream decoder's read).
  func switchToRelay(_ context: ChannelHandlerContext) {
    state = .closing
    let client = context.channel
    guard let up = upstream?.rawChannel else {
      client.close(promise: nil)
      return
    }
    var rewrite = false
    if case .websocket(_, let r) = upgrade { rewrite = r }
    let (proxy, target) = (self.proxy, self.target)
    let onSubstituted: @Sendable (Set<String>) -> Void = { keys in
      proxy.onSubstituted(.init(keys: keys, host: target.host, port: target.port, binary: target.binary))
    }
    context.eventLoop.assumeIsolated().execute {
      do {
        try WebSocketUpgrade.switchToRelay(client: client, upstream: up, rewrite: rewrite ? onSubstituted : nil)
        client.flush()
        client.read()
        up.read()
      } catch {
        client.close(promise: nil)
        up.close(promise: nil)
      }
    }
  }
}
