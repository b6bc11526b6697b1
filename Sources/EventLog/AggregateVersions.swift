/// The aggregate versions one write transaction (one group commit) reads and bumps: each aggregate's version is
/// read from the `aggregates` database once, then counted here, and the ``touched`` ones are written back at the
/// end of the transaction.
///
/// Consecutive events mostly share their aggregate (a command's events, a sandbox's lifecycle), so the slot of
/// the last aggregate used is checked first, by string comparison, before any hash lookup (issue 14: hashing
/// two strings per event was about a fifth of a bulk load's transaction time).
struct AggregateVersions {
  private var slots: [AggregateRef: Int] = [:]
  private var refs: [AggregateRef] = []
  private var versions: [UInt64] = []
  private var bumped: [Bool] = []
  private var last = -1

  /// The current version of `a` in this transaction; `read` gives the stored one the first time.
  mutating func version(_ a: AggregateRef, read: () throws -> UInt64) rethrows -> UInt64 {
    versions[try slot(a, read)]
  }

  /// Adds one event to `a` (its version grows by one); `read` gives the stored version the first time.
  mutating func bump(_ a: AggregateRef, read: () throws -> UInt64) rethrows {
    let s = try slot(a, read)
    versions[s] += 1
    bumped[s] = true
  }

  /// The aggregates bumped in this transaction with their new versions, in the hash table's order (as the
  /// dictionary this type replaced wrote them): in first-seen order the new aggregates' keys, which are
  /// close together, went in as a run and left the `aggregates` B-tree's pages emptier (on disk 13 → 18 B per
  /// event in `openshell-bench log`'s dictionary rows).
  var touched: [(AggregateRef, UInt64)] {
    slots.compactMap { bumped[$0.value] ? ($0.key, versions[$0.value]) : nil }
  }

  private mutating func slot(_ a: AggregateRef, _ read: () throws -> UInt64) rethrows -> Int {
    if last >= 0, refs[last] == a { return last }
    if let s = slots[a] {
      last = s
      return s
    }
    let v = try read()
    let s = refs.count
    refs.append(a)
    versions.append(v)
    bumped.append(false)
    slots[a] = s
    last = s
    return s
  }
}
