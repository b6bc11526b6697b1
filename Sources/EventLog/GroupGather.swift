/// What the writer knows, after a commit, about the calls to expect next (``Writer/gatherGroup()``).
struct GatherState {
  /// Calls already queued when the commit returned (none of them from the committed group).
  var queuedAtCommit = 0
  /// Calls in the committed group.
  var groupCalls = 0
  /// Its `mdb_txn_commit` time.
  var commitNs: UInt64 = 0
}

extension Writer {
  /// Longest wait for a group to gather, whatever the commits cost.
  static let maxGatherNs: UInt64 = 1_000_000

  /// Waits briefly, before taking the next group, for the callers just resumed to append again.
  ///
  /// Without it, concurrent appenders split into two halves that alternate: while one half's commit flushes,
  /// the other half queues up, and the writer takes exactly that half the moment the commit returns, a few
  /// microseconds before the resumed half is back; so every commit carries half the callers and every call
  /// waits two commits (issue 14: 64 appenders, 33 calls per commit). Group commit delays do the same
  /// (PostgreSQL `commit_delay`, MySQL `binlog_group_commit_sync_delay`); here the wait is bounded by half the
  /// last commit's time (at most ``maxGatherNs``) and ends as soon as as many calls are queued as were
  /// queued at that commit plus the group it carried, i.e. everybody who was waiting then is back. A lone
  /// caller (a group of one with nothing else queued) never waits; nor does anything but an append.
  /// Called with `cond` held; returns with it held.
  func gatherGroup() {
    guard case .append = queue.first, !stopping else { return }
    let g = gather
    let target = min(g.queuedAtCommit + g.groupCalls, shared.options.maxBatchEvents)
    guard g.groupCalls >= 2 || g.queuedAtCommit >= 1, queue.count < target, g.commitNs > 0 else { return }
    let waitNs = min(g.commitNs / 2, Self.maxGatherNs)
    // Monotonic: a wall clock set back meanwhile must not stretch the wait (``MonotonicCondition``).
    let deadline = monotonicNs() + waitNs
    gatherTarget = target
    defer { gatherTarget = 0 }
    while queue.count < target && !stopping {
      if !cond.wait(untilMonotonicNs: deadline) { break }
    }
    // Only one gather per commit: the next wait needs a new commit's figures.
    gather = GatherState()
  }
}
