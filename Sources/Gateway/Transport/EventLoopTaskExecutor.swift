import NIOCore

/// A Swift `TaskExecutor` that runs jobs on one NIO event loop (issue 14: GetSandbox latency).
///
/// grpc-swift-2 serves each RPC in Swift tasks while the connection's TLS and HTTP/2 run on an event loop.
/// On Swift's default executor (libdispatch's pool on Linux) a unary call then hops between the loop and pool
/// threads about six times (stream accepted, handler started, cancellation handle set, response parts
/// written, stream closed), each a futex or eventfd wake-up: `perf stat` counted 12–13 context switches and
/// 0.5–0.9 ms of gateway CPU per GetSandbox at concurrency 1. With this executor as the task executor
/// preference of the tasks serving a listener whose connections live on the same loop
/// (``GatewayServer/Configuration/rpcTasksOnEventLoop``), those steps run where the bytes are: about one
/// context switch and 0.42–0.49 ms of CPU per call.
///
/// Jobs enqueued from the loop itself are queued behind the current tick (no wake-up); from other threads
/// they wake the loop.
public final class EventLoopTaskExecutor: TaskExecutor {
  /// The loop that runs the jobs.
  public let eventLoop: any EventLoop

  /// An executor running its jobs on `eventLoop`.
  public init(eventLoop: any EventLoop) {
    self.eventLoop = eventLoop
  }

  /// Runs `job` on the event loop, as a task whose executor preference is this executor.
  public func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    let executor = asUnownedTaskExecutor()
    eventLoop.execute { job.runSynchronously(on: executor) }
  }
}
