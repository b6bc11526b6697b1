import Dispatch
import EventLog
import Logging

/// The reactor that gives the gateway's log its zstd dictionaries (issue 14: bytes per event on disk are
/// measured "with a trained dictionary"; without this reactor only the benchmark ever trained one).
///
/// Rule: the k-th dictionary (k = 1, 2, …) is trained once the log holds `firstAfter × 2^(k-1)` records —
/// 10k, 20k, 40k, … with the default — on the newest 10,000 record bodies (`EventLog.trainDictionary`), so
/// the dictionary follows the mix of events as it drifts while their number stays logarithmic in the log's
/// length (16 KiB each; about 7 for a million records). The rule needs no state of its own: the number of
/// stored dictionaries says where the next threshold is, after a restart too. A log that is already past
/// several thresholds (imported, or written by an older gateway) gets one dictionary, and the next only once
/// its head has doubled again (or after a restart).
///
/// Records keep the dictionary they were written with and dictionaries are never deleted, so older records
/// stay readable; only appends after the training use the new one. Training runs on a dispatch queue, never
/// on the concurrency pool (ZDICT takes tens to hundreds of milliseconds of CPU) and commits through the
/// log's writer like any append. A failed training is logged and retried at the next poll after `retryAfter`.
actor DictionaryTrainer {
  private let log: EventLog
  /// Records before the first dictionary (at least 8, zstd's minimum number of samples); 0 = never train.
  let firstAfter: UInt64
  private let logger = Logger(label: "openshell.gateway.log")
  private var notBefore = ContinuousClock.now
  /// Head seq below which no training is due even if the count rule says so: twice the head of the last
  /// training in this process, so that a long log that has fewer dictionaries than the rule wants (an
  /// import, an older gateway) gets one now, not one per poll on the same newest records.
  private var notBelow: UInt64 = 0

  init(log: EventLog, firstAfter: UInt64) {
    self.log = log
    self.firstAfter = firstAfter == 0 ? 0 : max(8, firstAfter)
  }

  /// Head seq at which the next dictionary is due, given `stored` dictionaries (nil: never, or past UInt64).
  static func threshold(firstAfter: UInt64, stored: Int) -> UInt64? {
    guard firstAfter > 0, stored < 63 else { return nil }
    let (due, overflow) = firstAfter.multipliedReportingOverflow(by: UInt64(1) << UInt64(stored))
    return overflow ? nil : due
  }

  /// Checks the head every `poll` until cancelled and trains when a threshold is reached.
  func run(poll: Duration = .seconds(2), retryAfter: Duration = .seconds(60)) async {
    guard firstAfter > 0 else { return }
    while !Task.isCancelled {
      // Sleep first: a start-up (restart to serving) is not slowed by a training.
      try? await Task.sleep(for: poll)
      if ContinuousClock.now >= notBefore, await trainIfDue() == false { notBefore = .now + retryAfter }
    }
  }

  /// Trains one dictionary if the head reached the next threshold. Returns nil when nothing was due, true
  /// when a dictionary was trained, false when training failed (logged).
  @discardableResult
  func trainIfDue() async -> Bool? {
    let log = self.log
    let stored: Int
    do { stored = try log.dictionaries().count } catch { return nil }
    let head = log.headSeq
    guard let due = Self.threshold(firstAfter: firstAfter, stored: stored), head >= max(due, notBelow) else { return nil }
    let result: Result<UInt32, Error> = await withCheckedContinuation { done in
      DispatchQueue.global(qos: .utility).async { done.resume(returning: Result { try log.trainDictionary() }) }
    }
    switch result {
    case .success(let id):
      notBelow = head.multipliedReportingOverflow(by: 2).overflow ? .max : head * 2
      logger.info("log dictionary trained", metadata: ["id": "\(id)", "head_seq": "\(log.headSeq)"])
      return true
    case .failure(let error):
      logger.warning("log dictionary not trained", metadata: ["error": "\(error)"])
      return false
    }
  }
}
