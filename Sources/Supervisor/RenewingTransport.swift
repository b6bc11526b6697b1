import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The supervisor's client transport, which picks up a renewed client certificate without restarting
/// anything (issue 16: sandbox certificates expired after 30 days and were never renewed).
///
/// grpc-swift's `HTTP2ClientTransport.Posix` reads its certificate files once, when it is made. The gateway
/// renews a sandbox's certificate before it expires by replacing `tls.key`, then `tls.crt`, in the
/// credentials directory (each by rename). Before every new RPC this transport compares the certificate
/// file's identity (inode, size, mtime: one `stat(2)`) with the one it loaded; when it changed, it makes a
/// new inner transport from the files (new TLS identity), sends this and later RPCs through it, and
/// gracefully shuts the old one down: calls already open on the old connection (the session stream, log
/// pushes) go on until they end; TLS checks a certificate only at the handshake. A reconnect after a
/// gateway restart is a new call, so it always presents the newest certificate. If the new files cannot
/// be loaded (e.g. caught between two renames) the old transport stays and the next call tries again.
final class RenewingTransport: ClientTransport, Sendable {
  typealias Bytes = HTTP2ClientTransport.Posix.Bytes

  /// Identity of a file as `stat(2)` sees it; a rename over it changes the inode.
  struct FileIdentity: Equatable, Sendable {
    var inode: UInt64
    var size: Int64
    var modifiedNs: Int64

    static func of(_ path: String) -> FileIdentity? {
      var st = stat()
      guard stat(path, &st) == 0 else { return nil }
      return FileIdentity(
        inode: UInt64(st.st_ino), size: Int64(st.st_size), modifiedNs: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec))
    }
  }

  private struct State {
    var current: HTTP2ClientTransport.Posix
    var loaded: FileIdentity?
    /// Bumped at every renewal (two calls racing to renew: the second keeps the first one's transport).
    var generation = 0
    var shutDown = false
  }

  private let make: @Sendable () throws -> HTTP2ClientTransport.Posix
  private let certificatePath: String?
  private let state: Mutex<State>
  /// Inner transports made after the first, whose `connect()` the running ``connect()`` starts.
  private let started: AsyncStream<HTTP2ClientTransport.Posix>
  private let starter: AsyncStream<HTTP2ClientTransport.Posix>.Continuation
  /// Called with a line for the sandbox log when a renewed certificate is taken into use.
  private let note: @Sendable (String) -> Void

  /// - Parameters:
  ///   - certificatePath: the client certificate file watched for renewal (nil: no client certificate).
  ///   - make: makes an inner transport from the files as they are now.
  init(
    certificatePath: String?, note: @escaping @Sendable (String) -> Void = { _ in },
    make: @escaping @Sendable () throws -> HTTP2ClientTransport.Posix
  ) throws {
    self.make = make
    self.certificatePath = certificatePath
    self.note = note
    let loaded = certificatePath.flatMap(FileIdentity.of)
    state = Mutex(State(current: try make(), loaded: loaded))
    (started, starter) = AsyncStream.makeStream()
  }

  var retryThrottle: RetryThrottle? { state.withLock { $0.current.retryThrottle } }

  /// Runs the first inner transport and every later one until all have shut down.
  func connect() async throws {
    let first = state.withLock { $0.current }
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask { try await first.connect() }
      for await next in started {
        group.addTask { try await next.connect() }
      }
    }
  }

  func beginGracefulShutdown() {
    let current = state.withLock { s -> HTTP2ClientTransport.Posix in
      s.shutDown = true
      return s.current
    }
    starter.finish()
    current.beginGracefulShutdown()
  }

  func config(forMethod descriptor: MethodDescriptor) -> MethodConfig? {
    state.withLock { $0.current.config(forMethod: descriptor) }
  }

  func withStream<T: Sendable>(
    descriptor: MethodDescriptor, options: CallOptions,
    _ closure: (RPCStream<Inbound, Outbound>, ClientContext) async throws -> T
  ) async throws -> T {
    try await renewedIfChanged().withStream(descriptor: descriptor, options: options, closure)
  }

  /// The inner transport for a new call: a new one when the certificate file changed since it was loaded.
  private func renewedIfChanged() -> HTTP2ClientTransport.Posix {
    guard let certificatePath else { return state.withLock { $0.current } }
    let now = FileIdentity.of(certificatePath)
    let (current, generation, changed) = state.withLock { s in (s.current, s.generation, now != nil && now != s.loaded && !s.shutDown) }
    guard changed else { return current }
    let fresh: HTTP2ClientTransport.Posix
    do { fresh = try make() } catch { return current }
    let replaced = state.withLock { s -> HTTP2ClientTransport.Posix? in
      guard s.generation == generation, !s.shutDown else { return nil }  // another call renewed first
      s.current = fresh
      s.loaded = now
      s.generation += 1
      return current
    }
    guard let old = replaced else { return state.withLock { $0.current } }
    starter.yield(fresh)
    old.beginGracefulShutdown()
    note("client certificate renewed by the gateway: new connections use it")
    return fresh
  }
}
