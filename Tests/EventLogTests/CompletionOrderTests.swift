import Foundation
import Synchronization
import Testing

@testable import EventLog

/// Group commit as callers see it: they are resumed in commit (seq) order, each only after its commit is
/// published, and a failing group fails exactly its own calls while every call that already returned stays.
@Suite struct CompletionOrderTests {
  /// 2,000 single-event calls queued from four threads at once, at most 64 per group (so at least 32 groups):
  /// the completions run in seq order, each one after its records are published and readable, and the ranges
  /// cover 1...2000 once each.
  @Test func callersResumeInSeqOrderAfterTheirCommit() throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log) { $0.maxBatchEvents = 64 }
    defer { log.close() }
    let writer = try log.requireWriter()
    struct Seen: Sendable {
      var range: ClosedRange<UInt64>
      var headAtResume: UInt64
      var readable: Bool
    }
    let seen = Mutex<[Seen]>([])
    let failures = Mutex<[EventLogError]>([])
    let done = DispatchGroup()
    let perThread = 500
    DispatchQueue.concurrentPerform(iterations: 4) { t in
      for i in 0..<perThread {
        done.enter()
        writer.submit(
          .append(
            AppendRequest(
              events: [event(id: "t\(t)", payload: "\(t)-\(i)", ts: 1)], expecting: [:], checkpoint: nil,
              completion: { result in
                switch result {
                case .success(let r):
                  let readable = (try? log.record(at: r.lowerBound))?.payload == Array("\(t)-\(i)".utf8)
                  seen.withLock { $0.append(Seen(range: r, headAtResume: log.headSeq, readable: readable)) }
                case .failure(let e):
                  failures.withLock { $0.append(e) }
                }
                done.leave()
              })))
      }
    }
    done.wait()
    #expect(failures.withLock { $0 }.isEmpty)
    let order = seen.withLock { $0 }
    #expect(order.count == 4 * perThread)
    #expect(order.map(\.range.lowerBound) == Array(1...UInt64(4 * perThread)), "resumed out of seq order")
    let unpublished = order.filter { $0.headAtResume < $0.range.upperBound }.count
    let unreadable = order.filter { !$0.readable }.count
    #expect(unpublished == 0, "resumed before the head was published")
    #expect(unreadable == 0, "resumed before the record was readable")
    let s = log.writerStats
    #expect(s.commits >= 2000 / 64)
    #expect(s.appendCalls == 2000)
    #expect(try log.verify().isOK)
  }

  /// Concurrent calls until the map is full at `maxMapSize`: every call that returned a range has its event
  /// stored at that seq (also after reopening), every call that failed got `.mapFull` and left nothing.
  @Test func failedGroupFailsExactlyItsCallersAndKeepsTheReturnedOnes() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let configure: (inout EventLog.Options) -> Void = {
      $0.initialMapSize = 256 << 10
      $0.maxMapSize = 512 << 10
    }
    var log = try openLog(tmp.log, configure)
    let outcomes = try await withThrowingTaskGroup(of: [(UInt64, Result<UInt64, EventLogError>)].self) { group in
      for t in 0..<16 {
        group.addTask { [log] in
          var mine: [(UInt64, Result<UInt64, EventLogError>)] = []
          for i in 0..<10 {
            let seed = UInt64(t * 100 + i + 1)
            var e = event(id: "t\(t)")
            e.payload = noise(8 << 10, seed: seed)
            do {
              mine.append((seed, .success(try await log.append([e]).lowerBound)))
            } catch let error as EventLogError {
              mine.append((seed, .failure(error)))
            }
          }
          return mine
        }
      }
      var all: [(UInt64, Result<UInt64, EventLogError>)] = []
      for try await m in group { all += m }
      return all
    }
    var stored: [UInt64: UInt64] = [:]  // seq -> payload seed
    var failed = 0
    for (seed, r) in outcomes {
      switch r {
      case .success(let seq): stored[seq] = seed
      case .failure(let e):
        #expect(e.code == .mapFull, "\(e)")
        failed += 1
      }
    }
    #expect(!stored.isEmpty && failed > 0, "\(stored.count) stored, \(failed) failed")
    #expect(stored.count + failed == 160)
    log.close()
    log = try openLog(tmp.log, configure)
    defer { log.close() }
    #expect(log.headSeq == UInt64(stored.count))
    #expect(Set(stored.keys) == Set(1...UInt64(stored.count)))
    for (seq, seed) in stored {
      #expect(try log.record(at: seq)?.payload == noise(8 << 10, seed: seed), "seq \(seq)")
    }
    #expect(try log.verify().isOK)
  }
}
