import ArgumentParser
import EventLog
import Foundation

/// `openshell-bench append`: durable appends alone (no bulk load, replay or dictionary tables), ours and
/// SQLite FULL interleaved round by round, with the CPU time and context switches of the whole process per
/// event and per commit, so changes to the append path can be compared on a shared, noisy machine (CPU per
/// event is steadier than events/s there).
struct AppendCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "append",
    abstract: "Durable appends only, ours and SQLite FULL interleaved: ev/s, p50/p99, CPU µs and switches.")

  @Option(help: "Concurrent appenders, comma separated.")
  var concurrency: String = "1,8,64"

  @Option(help: "Seconds per cell.")
  var seconds: Double = 3

  @Option(help: "Rounds: every cell is measured this many times, ours and SQLite alternating.")
  var rounds: Int = 3

  @Flag(help: "Skip SQLite FULL.")
  var noSqlite = false

  @Option(
    help:
      "Where the run makes its own directory (openshell-bench-append.XXXXXX, a fresh subdirectory per cell inside); only that directory is removed afterwards. /dev/shm takes the disk out."
  )
  var workDir: String = NSTemporaryDirectory()

  func run() async throws {
    let levels = concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
      .filter { $0 > 0 }
    guard !levels.isEmpty, rounds > 0, seconds > 0 else { throw ValidationError("nothing to run") }
    // The run's own directory inside `workDir`: what was there before is never touched, only this is removed.
    try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
    var template = Array((workDir as NSString).appendingPathComponent("openshell-bench-append.XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else {
      throw ValidationError("cannot make a directory in \(workDir): \(String(cString: strerror(errno)))")
    }
    let runDir = String(cString: made)
    defer { try? FileManager.default.removeItem(atPath: runDir) }
    let settings = LogBenchSettings(
      replayEvents: 0, appendSeconds: seconds, concurrencies: levels, bulkBatch: 0, dictEvents: 0, workDir: runDir)
    let mix = EventMix()
    print("openshell-bench append: load average \(loadAverage()) at start, work dir \(runDir) (\(fileSystemType(runDir)))")
    // What the appender tasks spend on making their events (fixture mix, ticket), outside the log: one thread.
    let (g0, n) = (cpuNs(), 200_000)
    let ticket = Ticket()
    var sink = 0
    for _ in 0..<n { sink &+= mix.event(ticket.next()).payload.count }
    print(String(format: "bench-side event generation: %.2f CPU µs/event (one thread; checksum %d)", Double(cpuNs() - g0) / 1e3 / Double(n), sink & 0xff))
    print("store    appenders   ev/s     p50 ms  p99 ms  calls/commit  CPU µs/ev  csw/commit  load   writer µs/commit: prep txn commit resume idle")
    for round in 1...rounds {
      for c in levels {
        let u0 = Usage.now()
        let (r, w) = try await LogBench.oursAppends(settings, mix: mix, concurrency: c)
        let u1 = Usage.now()
        print(line("ours", c, r, commits: w.commits, u0, u1) + "  " + phases(w, seconds: r.seconds))
        if !noSqlite {
          let v0 = Usage.now()
          let (s, _) = try await LogBench.sqliteAppends(settings, mix: mix, concurrency: c, sync: .full)
          let v1 = Usage.now()
          print(line("sqlFULL", c, s, commits: UInt64(s.ops), v0, v1))
        }
      }
      if round < rounds { print("") }
    }
  }

  /// The writer's time per commit by phase (``WriterStats``), and what is left of the run: waiting for calls.
  private func phases(_ w: WriterStats, seconds: Double) -> String {
    let n = Double(max(1, w.commits))
    let busy = w.prepareNanoseconds + w.transactionNanoseconds + w.commitNanoseconds + w.resumeNanoseconds
    let idle = max(0, seconds * 1e9 - Double(busy))
    return [w.prepareNanoseconds, w.transactionNanoseconds, w.commitNanoseconds, w.resumeNanoseconds].map {
      String(format: "%.0f", Double($0) / 1e3 / n)
    }.joined(separator: " ") + String(format: " %.0f", idle / 1e3 / n)
  }

  private func line(_ store: String, _ c: Int, _ r: RunResult, commits: UInt64, _ u0: Usage, _ u1: Usage) -> String {
    let cpuPerEvent = Double(u1.cpuNs - u0.cpuNs) / 1e3 / Double(max(1, r.ops))
    let switches = Double(u1.switches - u0.switches) / Double(max(1, commits))
    return String(
      format: "%-8@ %9d  %7.0f  %6.2f  %6.2f  %12.1f  %9.1f  %10.1f  %@", store as NSString, c, r.perSecond,
      r.percentile(50), r.percentile(99), Double(r.ops) / Double(max(1, commits)), cpuPerEvent, switches,
      loadAverage() as NSString)
  }
}

/// Process CPU time (all threads) and context switches (voluntary + involuntary, all threads: `getrusage`).
struct Usage {
  var cpuNs: UInt64
  var switches: Int

  static func now() -> Usage {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return Usage(cpuNs: processCPUNs(), switches: ru.ru_nvcsw + ru.ru_nivcsw)
  }
}

private func processCPUNs() -> UInt64 { cpuNs() }

/// The 1-minute load average.
func loadAverage() -> String {
  (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").first.map(String.init) ?? "?"
}
