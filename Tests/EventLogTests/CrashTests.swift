import Foundation
import Testing

@testable import EventLog

#if canImport(Glibc)
  import Glibc
#endif

@Suite struct CrashTests {
  /// SIGKILLs a process that appends in a loop at random moments; after each kill every acknowledged seq
  /// must be stored with its payload, and the log must verify. Iterations: 50, or
  /// `$OPENSHELL_CRASH_ITERATIONS`.
  @Test func sigkillDuringAppends() throws {
    guard let binary = locateStressBinary() else {
      Issue.record("openshell-log-stress not found next to the test runner; build it (swift build --product openshell-log-stress) or set OPENSHELL_LOG_STRESS")
      return
    }
    let iterations = Int(ProcessInfo.processInfo.environment["OPENSHELL_CRASH_ITERATIONS"] ?? "") ?? 50
    let tmp = TempDir("crash")
    defer { tmp.remove() }
    var acked: [UInt64: String] = [:]  // for the current directory
    var totalAcked = 0
    var killedWithAcks = 0
    var dir = ""
    let started = Date()
    for iteration in 0..<iterations {
      if iteration % 10 == 0 {
        dir = tmp.path + "/log-\(iteration / 10)"
        acked = [:]
      }
      let child = try StressProcess(
        binary: binary, arguments: [dir, "--tasks", "3", "--max-payload", "700"],
        stderrPath: tmp.path + "/stderr-\(iteration).txt")
      let ready = child.wait(timeout: 10) { $0.contains { $0.hasPrefix("READY") } }
      if !ready {
        child.kill9()
        let err = (try? String(contentsOfFile: tmp.path + "/stderr-\(iteration).txt", encoding: .utf8)) ?? ""
        Issue.record("stress process did not start (iteration \(iteration)): \(err)")
        return
      }
      if iteration % 2 == 0 {
        // Kill at a random time (possibly during open or the first transaction).
        usleep(UInt32.random(in: 0..<80_000))
      } else {
        // Kill after a random number of acknowledged events (appends are in flight continuously).
        let k = Int.random(in: 1...40)
        _ = child.wait(timeout: 10) { parseAcks($0).count >= k }
        usleep(UInt32.random(in: 0..<3_000))
      }
      child.kill9()
      let acks = parseAcks(child.lines)
      if !acks.isEmpty { killedWithAcks += 1 }
      for a in acks {
        if let earlier = acked[a.seq], earlier != a.payload {
          Issue.record("seq \(a.seq) acknowledged twice with different payloads: an acknowledged append was lost")
        }
        acked[a.seq] = a.payload
      }
      totalAcked += acks.count

      let log = try openLog(dir)
      defer { log.close() }
      let maxAcked = acks.map(\.seq).max() ?? 0
      #expect(log.headSeq >= maxAcked, "iteration \(iteration)")
      for a in acks {
        let r = try log.record(at: a.seq)
        #expect(r?.payload == Array(a.payload.utf8), "iteration \(iteration) seq \(a.seq)")
      }
      let report = try log.verify()
      #expect(report.isOK, "iteration \(iteration): \(String(describing: report.firstBad))")
      if iteration % 10 == 9 || iteration == iterations - 1 {
        // Full check of everything acknowledged into this directory.
        for (seq, payload) in acked {
          #expect(try log.record(at: seq)?.payload == Array(payload.utf8), "seq \(seq)")
        }
      }
    }
    let secs = Date().timeIntervalSince(started)
    print(
      "crash test: \(iterations) SIGKILLs (\(killedWithAcks) after acknowledged appends), \(totalAcked) acknowledged events checked, \(String(format: "%.1f", secs)) s"
    )
    #expect(killedWithAcks >= iterations / 2)
  }

  /// Another process writes; this process opens the same log read-only (LMDB multi-process readers),
  /// sees the head advance, reads and verifies, subscribes (polling), and a writer open is refused with the
  /// holder's pid.
  @Test func readOnlyOpenWhileAnotherProcessWrites() async throws {
    guard let binary = locateStressBinary() else {
      Issue.record("openshell-log-stress not found; set OPENSHELL_LOG_STRESS")
      return
    }
    let tmp = TempDir("ro")
    defer { tmp.remove() }
    let dir = tmp.log
    let child = try StressProcess(
      // A 64 KiB initial map with ~1.5 KB payloads: the writer grows the map while we read, so this
      // process sees MDB_MAP_RESIZED and must adopt the new size.
      binary: binary, arguments: [dir, "--tasks", "2", "--count", "1000000", "--map-size", "65536", "--max-payload", "3000"],
      stderrPath: tmp.path + "/stderr.txt")
    defer { child.kill9() }
    #expect(child.wait(timeout: 10) { parseAcks($0).count >= 20 })

    let e = expectEventLogError(.locked) { _ = try openLog(dir) }
    #expect(e?.message.contains("pid \(child.pid)") == true, "\(String(describing: e))")

    let ro = try openLog(dir) {
      $0.readOnly = true
      $0.initialMapSize = 64 << 10  // so that later growth by the writer is seen as MDB_MAP_RESIZED here
    }
    defer { ro.close() }
    let h1 = ro.headSeq
    let mapAtOpen = try ro.stats().mapSize
    #expect(h1 >= 20)
    let acks = parseAcks(child.lines)
    for a in acks.prefix(20) { #expect(try ro.record(at: a.seq)?.payload == Array(a.payload.utf8)) }
    let report = try ro.verify()
    #expect(report.isOK, "\(String(describing: report.firstBad))")

    // A subscription on the read-only log follows the other process's appends.
    let target = h1 + 400
    var seqs: [UInt64] = []
    for try await ev in ro.subscribe(from: 1) {
      if case .record(let r) = ev {
        seqs.append(r.seq)
        if r.seq >= target { break }
      }
    }
    #expect(seqs == Array(1...target))
    #expect(ro.headSeq >= target)
    let mapNow = try ro.stats().mapSize
    #expect(mapNow > mapAtOpen, "this reader adopted the writer's grown map (MDB_MAP_RESIZED): \(mapAtOpen) -> \(mapNow)")
    #expect(try ro.verify().isOK)
  }
}
