import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The gateway's file-descriptor budget (issue 17: at a 256-descriptor soft limit new connections were
/// silently refused).
enum DescriptorLimit {
  /// Raises the soft `RLIMIT_NOFILE` to the hard limit (`setrlimit(2)`) and logs the result.
  /// - Returns: the soft limit in effect afterwards (nil if it could not be read).
  @discardableResult
  static func raiseToHard(logger: Logger) -> UInt64? {
    var rl = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 else {
      logger.warning("cannot read the descriptor limit (RLIMIT_NOFILE): \(String(cString: strerror(errno)))")
      return nil
    }
    let before = UInt64(rl.rlim_cur)
    guard rl.rlim_cur < rl.rlim_max else {
      logger.info("descriptor limit: \(before) (already the hard limit)")
      return before
    }
    rl.rlim_cur = rl.rlim_max
    if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 {
      logger.info("descriptor limit raised from \(before) to the hard limit \(UInt64(rl.rlim_max))")
      return UInt64(rl.rlim_max)
    }
    logger.warning("descriptor limit stays at \(before): raising it to \(UInt64(rl.rlim_max)) failed: \(String(cString: strerror(errno)))")
    return before
  }
}

/// Sits on the listening channel before NIO's accept back-off: when `accept(2)` fails because descriptors ran
/// out (`EMFILE`/`ENFILE`) it logs RESOURCE_EXHAUSTED at most once a minute (the connections waiting in the
/// backlog are accepted once descriptors free up) and counts every occurrence.
final class AcceptFailureLogger: ChannelInboundHandler, Sendable {
  typealias InboundIn = Any
  private let logger: Logger
  private let state = Mutex<(last: ContinuousClock.Instant?, suppressed: Int)>((nil, 0))
  /// Every `EMFILE`/`ENFILE` accept failure seen.
  let failures = Atomic<Int>(0)
  static let interval: Duration = .seconds(60)

  init(logger: Logger) { self.logger = logger }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if let io = error as? IOError, io.errnoCode == EMFILE || io.errnoCode == ENFILE {
      failures.add(1, ordering: .relaxed)
      let now = ContinuousClock.now
      let report: Int? = state.withLock { s in
        if let last = s.last, now - last < Self.interval {
          s.suppressed += 1
          return nil
        }
        defer { s = (now, 0) }
        return s.suppressed
      }
      if let suppressed = report {
        let more = suppressed > 0 ? " (\(suppressed) more since the last report)" : ""
        logger.error(
          "RESOURCE_EXHAUSTED: cannot accept connections: out of file descriptors (\(io.errnoCode == EMFILE ? "EMFILE" : "ENFILE"))\(more); raise the limit (ulimit -n / LimitNOFILE=) or end sandboxes; logged at most once a minute"
        )
      }
    }
    context.fireErrorCaught(error)
  }
}
