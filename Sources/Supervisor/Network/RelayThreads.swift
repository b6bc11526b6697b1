import CSockDiag
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The threads that run the proxy's byte relays (``SpliceRelay``): a cached pool. A relay blocks its
/// thread for the connection's lifetime, so a job starts at once on an idle thread or on a new one (never
/// queued behind another connection); a thread that finished its relay waits up to ``idleSeconds`` for the
/// next and then ends. Why not a new thread per connection, as before: on the 2-core VM a relay on a
/// fresh thread moved 100 MB at 0.62–0.65 of direct and on a kept one at 1.06–1.20 (a standalone relay
/// with this loop on the sandbox's path, 30 paired rounds each, 2026-12-07; HAProxy, one long-lived
/// thread, 1.00–1.12 in the same rounds), its CPU per 100 MB 34 → 19–26 ms and the client's 19 → 13–16 ms:
/// the scheduler places a thread it has seen run beside the client and the server better than a new one.
final class RelayThreads: @unchecked Sendable {
  /// The supervisor's pool.
  static let shared = RelayThreads()
  /// How long (seconds) a finished thread waits for the next relay before it ends.
  let idleSeconds: Double
  /// The name of the pool's threads (`/proc/<pid>/task/<tid>/comm`; at most 15 bytes).
  static let threadName = "openshell-relay"

  private let cond = NSCondition()
  private var jobs: [@Sendable () -> Void] = []
  private var idle = 0

  init(idleSeconds: Double = 60) { self.idleSeconds = idleSeconds }

  /// Runs `job` on a thread of the pool: an idle one, or a new one when every thread is busy.
  func run(_ job: @escaping @Sendable () -> Void) {
    cond.lock()
    jobs.append(job)
    let spawn = jobs.count > idle
    if !spawn { cond.signal() }
    cond.unlock()
    guard spawn else { return }
    let thread = Thread { [self] in work() }
    thread.stackSize = 256 << 10
    thread.start()
  }

  private func work() {
    _ = csockdiag_name_thread(Self.threadName)
    cond.lock()
    while true {
      if jobs.isEmpty {
        idle += 1
        let deadline = Date(timeIntervalSinceNow: idleSeconds)
        while jobs.isEmpty && cond.wait(until: deadline) {}
        idle -= 1
        if jobs.isEmpty { break }  // idle for idleSeconds: end
      }
      let job = jobs.removeFirst()
      cond.unlock()
      job()
      cond.lock()
    }
    cond.unlock()
  }
}
