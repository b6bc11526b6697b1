import NIOCore
import NIOPosix
import Synchronization

/// `--nio-executor`: runs this process's Swift tasks on SwiftNIO's event loops (issue 14 experiment).
///
/// grpc-swift-2 serves and calls on NIO event loops, while handlers, interceptors and the store run as Swift
/// tasks; on Swift's default global executor (the cooperative pool) every RPC hops from its event loop
/// thread to a pool thread and back. With `MultiThreadedEventLoopGroup.singleton` installed as the global
/// executor (which both the gateway's and the client's transports use), a task started from an event loop
/// stays on that loop's thread. Measured on the 2-core machine (issue 14, README Benchmarks): context
/// switches per request halve, but CPU per request does not drop, and every RPC of one HTTP/2 connection
/// then runs on that connection's single loop, so one connection is capped at one core; the gateway
/// therefore keeps the default executor, and this switch stays for comparison runs.
enum NIOExecutor {
  /// nil until the first call; then what it returned (NIO allows one attempt per process).
  private static let installed = Mutex<Bool?>(nil)

  /// Installs the singleton event loop group as Swift concurrency's global executor
  /// (`NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()`, swift-nio
  /// ≥ 2.59), first thing in main before any task starts. Idempotent.
  /// - Returns: whether the event loops are the global executor (false where the runtime lacks the hook).
  @discardableResult
  static func install() -> Bool {
    installed.withLock { result in
      if let result { return result }
      let ok = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
      result = ok
      return ok
    }
  }
}
