import Foundation
import Synchronization
import Testing

@testable import EventLog

@Suite struct ConcurrencyTests {
  /// 32 tasks race to append to one aggregate with `.exact(version they read)`; every version is won by
  /// exactly one task, and losers see `.conflict` with the actual version.
  @Test func optimisticConcurrencyExactlyOneWinnerPerVersion() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    let agg = AggregateRef(kind: "sandbox", id: "contended")
    let target: UInt64 = 160
    let wins = try await withThrowingTaskGroup(of: [UInt64].self) { group in
      for t in 0..<32 {
        group.addTask {
          var mine: [UInt64] = []
          while true {
            let v = try log.aggregateVersion(agg)
            if v >= target { return mine }
            do {
              let e = event("sandbox.updated", kind: agg.kind, id: agg.id, payload: "task \(t) at \(v)")
              let range = try await log.append([e], expecting: [agg: .exact(v)])
              mine.append(v)
              #expect(range.count == 1)
            } catch let e as EventLogError {
              #expect(e.code == .conflict, "\(e)")
              #expect(e.aggregate == agg)
              #expect(e.expected == .exact(v))
              #expect((e.actual ?? 0) > v)
            }
          }
        }
      }
      var all: [UInt64] = []
      for try await w in group { all += w }
      return all
    }
    #expect(wins.sorted() == Array(0..<target))
    #expect(try log.aggregateVersion(agg) == target)
    // The stored payloads agree: the event at version v was written by the task that expected v.
    let records = try log.records(from: 1, filter: EventFilter(aggregate: agg))
    #expect(records.count == Int(target))
    for (v, r) in records.enumerated() {
      #expect(String(decoding: r.payload, as: UTF8.self).hasSuffix(" at \(v)"))
    }
    let stats = log.writerStats
    #expect(stats.conflicts > 0)
    #expect(stats.appendedEvents == UInt64(target))
    #expect(try log.verify().isOK)
  }

  /// Rounds of 32 simultaneous calls all expecting the same version: exactly one wins each round; calls
  /// with `.noStream` on fresh aggregates in the same groups are unaffected.
  @Test func conflictsDoNotAffectOtherCallsInTheGroup() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    let agg = AggregateRef(kind: "k", id: "shared")
    for round in 0..<8 {
      let results = await withTaskGroup(of: (Bool, Bool).self) { group in
        for t in 0..<32 {
          group.addTask {
            let contended = (try? await log.append([event(kind: "k", id: "shared")], expecting: [agg: round == 0 ? .noStream : .exact(UInt64(round))])) != nil
            let fresh = AggregateRef(kind: "k", id: "fresh-\(round)-\(t)")
            let own = (try? await log.append([event(kind: "k", id: fresh.id)], expecting: [fresh: .noStream])) != nil
            return (contended, own)
          }
        }
        var out: [(Bool, Bool)] = []
        for await r in group { out.append(r) }
        return out
      }
      #expect(results.filter(\.0).count == 1, "round \(round)")
      #expect(results.allSatisfy { $0.1 }, "round \(round)")
    }
    #expect(try log.aggregateVersion(agg) == 8)
    // A multi-event batch that fails its expectation writes nothing (atomic).
    let head = log.headSeq
    _ = expectEventLogError(.conflict) {
      try log.appendSync([event(id: "z"), event(id: "z")], expecting: [agg: .exact(3)])
    }
    #expect(log.headSeq == head)
    #expect(try log.aggregateVersion(AggregateRef(kind: "thing", id: "z")) == 0)
    // Expectations count events of earlier calls in the same batch: a two-event append to a new aggregate
    // makes its version 2.
    try await log.append([event(id: "n"), event(id: "n")], expecting: [AggregateRef(kind: "thing", id: "n"): .noStream])
    #expect(try log.aggregateVersion(AggregateRef(kind: "thing", id: "n")) == 2)
  }

  /// Many concurrent single-event appends share write transactions.
  @Test func groupCommitBatches() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    let calls = 400
    let ranges = try await withThrowingTaskGroup(of: ClosedRange<UInt64>.self) { group in
      for i in 0..<calls {
        group.addTask { try await log.append([event(id: "g\(i % 10)", payload: "call \(i)")]) }
      }
      var all: [ClosedRange<UInt64>] = []
      for try await r in group { all.append(r) }
      return all
    }
    #expect(ranges.map(\.lowerBound).sorted() == Array(1...UInt64(calls)))
    let s = log.writerStats
    print("group commit: \(s.appendCalls) calls in \(s.commits) commits, largest group \(s.largestBatchCalls)")
    #expect(s.appendCalls == UInt64(calls))
    #expect(s.appendedEvents == UInt64(calls))
    #expect(s.commits < s.appendCalls)
    #expect(s.largestBatchCalls > 1)
    #expect(try log.verify().isOK)
  }

  /// maxBatchEvents bounds a group; a single call larger than the bound still goes through alone.
  @Test func batchBound() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log) { $0.maxBatchEvents = 4 }
    defer { log.close() }
    try await log.append((0..<10).map { event(payload: "\($0)") })
    try await withThrowingTaskGroup(of: Void.self) { group in
      for i in 0..<50 { group.addTask { try await log.append([event(payload: "c\(i)"), event(payload: "d\(i)")]) } }
      try await group.waitForAll()
    }
    #expect(log.headSeq == 110)
    #expect(log.writerStats.largestBatchCalls <= 2)
  }
}
