import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// Where and how to reach a gateway (parsed endpoint plus the TLS files of its registration).
struct Target {
  var name: String
  var endpoint: String
  var host: String
  var port: Int
  var tls: Bool
  var caPath: String?
  var certPath: String?
  var keyPath: String?
  var authMode: String

  init(name: String, endpoint: String, authMode: String? = nil, mtlsDir: URL?) throws {
    var e = endpoint.trimmingCharacters(in: .whitespaces)
    while e.hasSuffix("/") { e.removeLast() }
    if !e.contains("://") { e = "https://" + e }
    guard let url = URLComponents(string: e), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
      let host = url.host, !host.isEmpty
    else { throw CLIError("invalid gateway endpoint '\(endpoint)': expected http(s)://HOST[:PORT]") }
    self.name = name
    self.endpoint = e
    self.host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
    self.tls = scheme == "https"
    self.port = url.port ?? (tls ? 443 : 80)
    guard (1...65535).contains(port) else {
      throw CLIError("invalid gateway endpoint '\(endpoint)': port \(port) is outside 1-65535")
    }
    if let dir = mtlsDir, tls {
      func file(_ f: String) -> String? {
        let p = dir.appendingPathComponent(f).path
        return FileManager.default.fileExists(atPath: p) ? p : nil
      }
      caPath = file("ca.crt")
      certPath = file("tls.crt")
      keyPath = file("tls.key")
      if certPath == nil || keyPath == nil { certPath = nil; keyPath = nil }
    }
    self.authMode = authMode ?? (tls ? (certPath != nil ? "mtls" : "tls") : "plaintext")
  }
}

/// Minimal HTTP/1.1 and TLS probes over SwiftNIO (no dependency on curl or URLSession's TLS).
enum HTTPProbe {
  struct Response { var status: Int; var body: String }

  /// `GET path` with the target's TLS settings (CA, client certificate). Throws on any failure.
  static func get(_ t: Target, path: String, timeout: TimeAmount = .seconds(3)) async throws -> Response {
    var sslContext: NIOSSLContext?
    if t.tls {
      var c = TLSConfiguration.makeClientConfiguration()
      c.applicationProtocols = ["http/1.1"]
      // Full verification: the chain and the host name (or IP address SAN), as the gRPC client checks.
      c.certificateVerification = .fullVerification
      if let ca = t.caPath {
        c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
      } else if t.certPath != nil {
        throw CLIError("the registration of \(t.endpoint) has a client certificate but no ca.crt")
      }
      if let cert = t.certPath, let key = t.keyPath {
        c.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
        c.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
      }
      sslContext = try NIOSSLContext(configuration: c)
    }
    let collected = try await exchange(
      host: t.host, port: t.port, ssl: sslContext, verify: nil, timeout: timeout,
      request: "GET \(path) HTTP/1.1\r\nHost: \(t.host):\(t.port)\r\nUser-Agent: openshell-cli\r\nConnection: close\r\n\r\n")
    let text = String(decoding: collected, as: UTF8.self)
    guard text.hasPrefix("HTTP/1."), let line = text.split(separator: "\r\n").first else {
      throw CLIError("unexpected HTTP response from \(t.endpoint)")
    }
    let parts = line.split(separator: " ")
    let status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
    let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
    return Response(status: status, body: body)
  }

  /// The certificate chain the server presents (DER), fetched without verifying it and without
  /// offering a client certificate. Used to tell "the gateway's CA changed" from other TLS failures.
  static func serverChain(host: String, port: Int, timeout: TimeAmount = .seconds(2)) async throws -> [[UInt8]] {
    var c = TLSConfiguration.makeClientConfiguration()
    c.applicationProtocols = ["http/1.1"]
    c.certificateVerification = .noHostnameVerification
    let box = ChainBox()
    _ = try? await exchange(
      host: host, port: port, ssl: try NIOSSLContext(configuration: c),
      verify: { certs, promise in
        box.set(certs.compactMap { try? $0.toDERBytes() })
        promise.succeed(.failed)  // stop the handshake: we only wanted the certificates
      }, timeout: timeout, request: nil)
    let chain = box.get()
    guard !chain.isEmpty else { throw CLIError("no TLS certificate received from \(host):\(port)") }
    return chain
  }

  private final class ChainBox: @unchecked Sendable {
    private let lock = NSLock()
    private var chain: [[UInt8]] = []
    func set(_ c: [[UInt8]]) { lock.withLock { chain = c } }
    func get() -> [[UInt8]] { lock.withLock { chain } }
  }

  private static func exchange(
    host: String, port: Int, ssl: NIOSSLContext?, verify: NIOSSLCustomVerificationCallback?, timeout: TimeAmount,
    request: String?
  ) async throws -> [UInt8] {
    let group = MultiThreadedEventLoopGroup.singleton
    let promise = group.next().makePromise(of: [UInt8].self)
    let sni: String? = (host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }) ? nil : host
    let bootstrap = ClientBootstrap(group: group)
      .connectTimeout(timeout)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          if let ssl {
            let handler =
              if let verify { try NIOSSLClientHandler(context: ssl, serverHostname: sni, customVerificationCallback: verify) } else {
                try NIOSSLClientHandler(context: ssl, serverHostname: sni)
              }
            try channel.pipeline.syncOperations.addHandler(handler)
          }
          try channel.pipeline.syncOperations.addHandler(Collector(promise: promise))
        }
      }
    let channel: Channel
    do {
      channel = try await bootstrap.connect(host: host, port: port).get()
    } catch {
      promise.fail(error)
      throw error
    }
    channel.eventLoop.scheduleTask(in: timeout) {
      promise.fail(CLIError("timed out after \(timeout.nanoseconds / 1_000_000_000) s talking to \(host):\(port)"))
      channel.close(promise: nil)
    }
    if let request {
      var buffer = channel.allocator.buffer(capacity: request.utf8.count)
      buffer.writeString(request)
      channel.writeAndFlush(buffer, promise: nil)
    }
    return try await promise.futureResult.get()
  }

  private final class Collector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<[UInt8]>
    var bytes: [UInt8] = []
    init(promise: EventLoopPromise<[UInt8]>) { self.promise = promise }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      var b = unwrapInboundIn(data)
      bytes += b.readBytes(length: b.readableBytes) ?? []
    }
    func channelInactive(context: ChannelHandlerContext) {
      promise.succeed(bytes)
      context.fireChannelInactive()
    }
    func errorCaught(context: ChannelHandlerContext, error: Error) {
      if !bytes.isEmpty, error is NIOSSLError { promise.succeed(bytes) } else { promise.fail(error) }
      context.close(promise: nil)
    }
  }
}
