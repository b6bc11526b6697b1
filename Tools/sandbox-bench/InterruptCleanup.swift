import Dispatch
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// SIGINT and SIGTERM during a benchmark run (Ctrl-C): the run's cleanup — the peer relays, the
/// sandboxes of the in-process gateway, a temporary data directory — runs before the process exits with
/// 128 + the signal, so nothing of the run outlives it (its sandboxes' namespaces and supervisors would:
/// a leftover supervisor also made a later `--proxy` run read the wrong process's CPU). The cleanup gets
/// at most 15 s. Processes this benchmark starts get the default dispositions back (`Spawner` resets them).
enum InterruptCleanup {
  private nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []
  private nonisolated(unsafe) static var action: (@Sendable () async -> Void)?
  private nonisolated(unsafe) static var caught: Int32 = 0
  private static let lock = NSLock()

  /// Runs `cleanup` on SIGINT/SIGTERM from now on (replacing an earlier one), then exits.
  static func install(_ cleanup: @escaping @Sendable () async -> Void) {
    lock.withLock {
      action = cleanup
      guard sources.isEmpty else { return }
      for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler {
          let run = lock.withLock { () -> (@Sendable () async -> Void)? in
            caught = sig
            return action
          }
          let done = DispatchSemaphore(value: 0)
          Task {
            await run?()
            done.signal()
          }
          _ = done.wait(timeout: .now() + 15)
          exit(128 + sig)
        }
        source.resume()
        sources.append(source)
      }
    }
  }

  /// The signal being handled, 0 while none: once set, the handler ends the process.
  static var signalled: Int32 { lock.withLock { caught } }

  /// For a run whose measurement failed because the cleanup stopped what it used (its sandbox went away):
  /// waits for the handler to end the process instead of reporting that failure.
  static func awaitExitIfSignalled() async {
    guard signalled != 0 else { return }
    while true { try? await Task.sleep(for: .seconds(1)) }
  }
}
