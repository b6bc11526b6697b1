import CSockDiag
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The relay of an admitted, uninspected connection (a `CONNECT` tunnel to an L4 endpoint or a
/// `tls: skip` one, or a forwarded absolute-form `http://` request): the client's and the upstream's
/// sockets are joined by `splice(2)` through a pipe per direction (`csockdiag_relay_run`), so the
/// bytes never enter the supervisor's memory — the NIO relay copied each byte in and out and woke the
/// event loop per 64 KiB read (issue 10, "Benchmark": ≥ 80 % of direct throughput). Each relay blocks a
/// thread of ``RelayThreads`` (poll/splice) until both directions ended; ``cancel()`` ends it at once
/// (a policy swap that no longer allows the connection: both sockets are shut down).
final class SpliceRelay: @unchecked Sendable {
  // A C object with its own lock and reference count: safe to cancel from any thread, also after the
  // run ended (then a no-op); released with this object.
  private let handle: OpaquePointer

  /// Takes ownership of both descriptors. nil when out of memory (the caller closes them).
  init?(client: Int32, upstream: Int32) {
    guard let h = csockdiag_relay_new(client, upstream) else { return nil }
    handle = h
  }

  deinit { csockdiag_relay_release(handle) }

  /// Starts the relay on a thread of ``RelayThreads``; `ended` runs on it after both sockets were closed.
  func start(_ ended: @escaping @Sendable () -> Void) {
    RelayThreads.shared.run { [self] in
      var up: UInt64 = 0
      var down: UInt64 = 0
      csockdiag_relay_run(handle, &up, &down)
      ended()
    }
  }

  func cancel() { csockdiag_relay_cancel(handle) }
}
