import CSockDiag
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// The sandbox's policy proxy (enforcement-and-ssh.md §1.4, row "Proxy"): an explicit HTTP proxy on the
/// host side of the sandbox's veth pair (`10.200.x.y:3128`), the only address the sandbox's nftables
/// rules let its processes reach; or, with a gateway without root, on `127.0.0.1:3128` inside the
/// sandbox's private namespace, whose socket the supervisor created there (``PrivateNetwork``).
///
/// Per accepted connection: read one request head (at most 64 KiB); `CONNECT host:port` opens a tunnel,
/// an absolute-form request (`GET http://host[:port]/path HTTP/1.1`) is forwarded in origin form with
/// `Connection: close` (one request per connection, so a later request cannot reach another host on a
/// connection decided for this one). Anything else gets `400`. The decision (off the event loop):
/// identify the calling binary (``CallerResolver``), decide against one policy generation
/// (``ProxyPolicy``), resolve DNS once and check the addresses (``AddressGuard``), then dial exactly
/// those addresses. A denial answers `403 Forbidden` with the reason (for CONNECT too: the tunnel is
/// refused) and is reported to ``onDenied``. Every socket has TCP_NODELAY.
final class PolicyProxy: Sendable {
  /// One denial: what was asked, by whom, why.
  struct Denial: Sendable {
    var method: String
    var host: String
    var port: Int
    var binary: CallerBinary?
    var reason: String
  }

  /// One request (or WebSocket message) that left with the values of `keys` in place of their
  /// placeholders (``SubstitutionReporter``).
  struct Substitution: Sendable {
    var keys: Set<String>
    var host: String
    var port: Int
    var binary: CallerBinary?
  }

  let policy: ProxyPolicy
  let resolver: CallerResolver
  /// The sandbox CA and the upstream TLS context (nil when TLS termination could not be set up: inspected
  /// connections are refused); made in the background once the sandbox is READY
  /// (``NetworkEnforcement/startDeferredWork()``) or at the first read, so the first reader may wait for it.
  var tls: ProxyTLS? { tlsSlot.value }
  let tlsSlot: BackgroundValue<ProxyTLS?>
  let onDenied: @Sendable (Denial) -> Void
  let onSubstituted: @Sendable (Substitution) -> Void
  /// The proxy's two event loops and its pool of four threads for blocking work (caller lookup, DNS, dials),
  /// started on a thread of their own at init (issue 14, CreateSandbox → READY: starting six threads and
  /// waiting for each held up the listening socket); the accept loop takes its first connection once they run.
  private let loops: BackgroundValue<Loops>
  struct Loops: Sendable {
    let group: MultiThreadedEventLoopGroup
    let pool: NIOThreadPool
  }
  var group: MultiThreadedEventLoopGroup { loops.value.group }
  var pool: NIOThreadPool { loops.value.pool }
  /// Client connections open now (at most ``maxConnections``).
  let connections = Mutex(0)
  /// Simultaneous client connections per sandbox (each holds two descriptors in the supervisor).
  static let maxConnections = 1024

  init(
    policy: ProxyPolicy, resolver: CallerResolver, tls: BackgroundValue<ProxyTLS?>, onDenied: @escaping @Sendable (Denial) -> Void,
    onSubstituted: @escaping @Sendable (Substitution) -> Void = { _ in }
  ) {
    self.policy = policy
    self.resolver = resolver
    self.tlsSlot = tls
    self.onDenied = onDenied
    self.onSubstituted = onSubstituted
    loops = BackgroundValue {
      let pool = NIOThreadPool(numberOfThreads: 4)
      pool.start()
      return Loops(group: MultiThreadedEventLoopGroup(numberOfThreads: 2), pool: pool)
    }
  }

  /// Binds `host:port` (IPv4) and serves until the process ends.
  /// - Throws: when the address cannot be bound.
  func start(host: String, port: Int) throws {
    let fd = csockdiag_listen_tcp4(host, UInt16(clamping: port))
    guard fd >= 0 else { throw AddressGuard.GuardError(message: "cannot listen on \(host):\(port): \(String(cString: strerror(-fd)))") }
    serve(fd)
  }

  /// Serves an already bound socket (``PrivateNetwork``: created inside the sandbox's namespace) until
  /// the process ends.
  func start(boundSocket: Int32) { serve(boundSocket) }

  /// The accept loop (its own thread): each connection is counted against ``maxConnections`` (over it,
  /// closed at once, so an agent holding idle connections cannot exhaust the supervisor's descriptors)
  /// and handed to NIO with its descriptor number, so that an admitted uninspected connection can leave
  /// NIO for a splice relay (``ProxyRequestHandler``, ``SpliceRelay``).
  private func serve(_ listenFD: Int32) {
    let thread = Thread { [self] in
      while true {
        let fd = csockdiag_accept(listenFD)
        if fd < 0 {
          if fd == -EBADF || fd == -EINVAL || fd == -ENOTSOCK { return }
          usleep(10_000)  // EMFILE, ENFILE, ENOBUFS, ENOMEM: let descriptors or memory free up
          continue
        }
        guard
          connections.withLock({ n -> Bool in
            guard n < Self.maxConnections else { return false }
            n += 1
            return true
          })
        else {
          close(fd)
          continue
        }
        let counted = CountedOnce()
        ClientBootstrap(group: group)
          .channelOption(.tcpOption(.tcp_nodelay), value: 1)
          .channelOption(.autoRead, value: true)
          .channelInitializer { channel in
            channel.closeFuture.whenComplete { _ in
              if counted.take() { self.connections.withLock { $0 -= 1 } }
            }
            return channel.eventLoop.makeCompletedFuture {
              try channel.pipeline.syncOperations.addHandler(ProxyRequestHandler(proxy: self, socket: fd))
            }
          }
          .withConnectedSocket(fd)
          .whenFailure { _ in
            if counted.take() { self.connections.withLock { $0 -= 1 } }
          }
      }
    }
    thread.name = "openshell-proxy-accept"
    thread.start()
  }

  /// Dials the first reachable address of `addresses` (in order) outside NIO, for a splice relay:
  /// a non-blocking socket with TCP_NODELAY (blocking call: runs on the thread pool).
  /// - Throws: the last address's error when none answers within 10 s each.
  static func dialRaw(_ addresses: [IPAddress], port: Int) throws -> Int32 {
    var last = "no address to dial"
    for ip in addresses {
      let bytes = ip.bytes
      let fd = bytes.withUnsafeBufferPointer { csockdiag_dial(bytes.count == 4 ? AF_INET : AF_INET6, $0.baseAddress, UInt16(clamping: port), 10_000) }
      if fd >= 0 { return fd }
      last = "\(ip): \(String(cString: strerror(-fd)))"
    }
    throw AddressGuard.GuardError(message: last)
  }

  /// The decision for one request (blocking: runs on the thread pool).
  struct Admission: Sendable {
    var verdict: Result<(addresses: [IPAddress], generation: UInt64, binary: CallerBinary, inspection: L7Inspection?), Denied>
  }

  struct Denied: Error, Sendable {
    var binary: CallerBinary?
    var reason: String
  }

  func admit(host: String, port: Int, peer: SocketAddress?, local: SocketAddress?) -> Admission {
    var binary: CallerBinary?
    var identityError: String?
    if let peer, let local, let pip = peer.ipAddress.flatMap(IPAddress.init), let lip = local.ipAddress.flatMap(IPAddress.init),
      let pport = peer.port, let lport = local.port
    {
      do { binary = try resolver.resolve(peer: (pip, pport), local: (lip, lport)) } catch { identityError = "\(error)" }
    } else {
      identityError = "the connection has no IP peer address"
    }
    let (snap, verdict) = policy.decide(host: host, port: port, binary: binary)
    switch verdict {
    case .deny(let reason):
      let why = identityError.map { "\(reason) [caller: \($0)]" } ?? reason
      return Admission(verdict: .failure(Denied(binary: binary, reason: why)))
    case .allow(_, let allowedIPs, let inspection):
      guard let binary else { return Admission(verdict: .failure(Denied(binary: nil, reason: identityError ?? "caller unknown"))) }
      let addresses: [IPAddress]
      do { addresses = try AddressGuard.resolve(host) } catch {
        return Admission(verdict: .failure(Denied(binary: binary, reason: "\(error)")))
      }
      switch AddressGuard.check(addresses, allowedIPs: allowedIPs) {
      case .failure(let e): return Admission(verdict: .failure(Denied(binary: binary, reason: e.message)))
      case .success(let ok): return Admission(verdict: .success((ok, snap.generation, binary, inspection)))
      }
    }
  }

  /// Reads of an inspected upstream connection: NIO's adaptive sizes, up to 256 KiB instead of 64 KiB,
  /// so a large response body takes a quarter of the reads, pipeline passes and writes to the client.
  static let upstreamReads = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 256 << 10)

  /// Dials the first reachable address of `addresses` (in order), with TCP_NODELAY.
  func dial(_ addresses: [IPAddress], port: Int, on loop: EventLoop) -> EventLoopFuture<Channel> {
    dial(addresses[...], port: port, on: loop, lastError: nil)
  }

  private func dial(_ rest: ArraySlice<IPAddress>, port: Int, on loop: EventLoop, lastError: Error?) -> EventLoopFuture<Channel> {
    guard let ip = rest.first else {
      return loop.makeFailedFuture(lastError ?? AddressGuard.GuardError(message: "no address to dial"))
    }
    do {
      let address = try SocketAddress(ipAddress: ip.description, port: port)
      return ClientBootstrap(group: loop)
        .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        .channelOption(.autoRead, value: false)
        .channelOption(.recvAllocator, value: Self.upstreamReads)
        .connectTimeout(.seconds(10))
        .connect(to: address)
        .flatMapError { self.dial(rest.dropFirst(), port: port, on: loop, lastError: $0) }
    } catch {
      return dial(rest.dropFirst(), port: port, on: loop, lastError: error)
    }
  }
}

/// A connection's slot in ``PolicyProxy/connections``, given back once.
final class CountedOnce: Sendable {
  private let held = Mutex(true)
  /// true the first time only.
  func take() -> Bool {
    held.withLock { h in
      defer { h = false }; return h
    }
  }
}

/// A parsed request head.
struct ProxyRequestHead: Sendable {
  var method: String
  var target: String
  var version: String
  var headers: [(String, String)]
  var host: String
  var port: Int
  var isConnect: Bool { method == "CONNECT" }

  enum ParseError: Error { case malformed(String) }

  /// Parses the head text (without the final blank line).
  static func parse(_ text: String) throws -> ProxyRequestHead {
    var lines = text.components(separatedBy: "\r\n")
    let first = lines.removeFirst().split(separator: " ", omittingEmptySubsequences: true).map(String.init)
    guard first.count == 3, first[2].hasPrefix("HTTP/1.") else { throw ParseError.malformed("malformed request line") }
    var headers: [(String, String)] = []
    for line in lines where !line.isEmpty {
      guard let colon = line.firstIndex(of: ":") else { throw ParseError.malformed("malformed header line") }
      headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
    }
    let method = first[0].uppercased()
    let authority: String
    var defaultPort = 80
    if method == "CONNECT" {
      authority = first[1]
      defaultPort = -1
    } else {
      let lower = first[1].lowercased()
      guard lower.hasPrefix("http://") else {
        throw ParseError.malformed(
          lower.hasPrefix("https://")
            ? "absolute-form https:// requests are not supported; use CONNECT" : "only CONNECT and absolute-form http:// requests are proxied")
      }
      let rest = first[1].dropFirst(7)
      authority = String(rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" })
    }
    guard let (host, port) = splitAuthority(authority, defaultPort: defaultPort) else {
      throw ParseError.malformed("the request names no valid host:port")
    }
    return ProxyRequestHead(method: method, target: first[1], version: first[2], headers: headers, host: host, port: port)
  }

  /// `host[:port]` (or `[v6]:port`, userinfo dropped) → (lower-cased host, port); nil when the host is
  /// empty or invalid or the port is not in 1…65535 (`defaultPort` -1 = a port is required). A host is
  /// a DNS name or an IP literal: letters, digits, '-', '.', '_' (and ':' '%' in IPv6). Anything else
  /// (control characters, spaces, ESC …) is refused, so a request can never forge lines in the
  /// sandbox's log or the audit through the host it names.
  static func splitAuthority(_ raw: String, defaultPort: Int) -> (host: String, port: Int)? {
    var authority = raw
    if let at = authority.lastIndex(of: "@") { authority = String(authority[authority.index(after: at)...]) }
    var host = authority
    var port = defaultPort
    if authority.hasPrefix("[") {
      guard let close = authority.firstIndex(of: "]") else { return nil }
      host = String(authority[authority.index(after: authority.startIndex)..<close])
      let after = authority[authority.index(after: close)...]
      if after.hasPrefix(":") { port = Int(after.dropFirst()) ?? -2 }
    } else if let colon = authority.lastIndex(of: ":") {
      host = String(authority[..<colon])
      let digits = authority[authority.index(after: colon)...]
      port = !digits.isEmpty && digits.allSatisfy(\.isASCII) && digits.allSatisfy(\.isNumber) ? Int(digits) ?? -2 : -2
    }
    let hostBytes = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:%".utf8)
    guard !host.isEmpty, (1...65535).contains(port), host.utf8.count <= 253, host.utf8.allSatisfy(hostBytes.contains) else { return nil }
    return (host.lowercased(), port)
  }

  /// The head to send upstream for an absolute-form request: origin-form target, hop-by-hop and proxy
  /// headers removed, `Connection: close`.
  func upstreamHead() -> String {
    let rest = target.dropFirst(7)
    let pathStart = rest.firstIndex { $0 == "/" || $0 == "?" }
    var path = pathStart.map { String(rest[$0...]) } ?? "/"
    if path.hasPrefix("?") { path = "/" + path }
    let drop: Set<String> = ["proxy-connection", "proxy-authorization", "connection", "keep-alive"]
    var out = "\(method) \(path) \(version)\r\n"
    var hasHost = false
    for (name, value) in headers where !drop.contains(name.lowercased()) {
      if name.lowercased() == "host" { hasHost = true }
      out += "\(name): \(value)\r\n"
    }
    if !hasHost { out += "Host: \(host)\(port == 80 ? "" : ":\(port)")\r\n" }
    out += "Connection: close\r\n\r\n"
    return out
  }
}
