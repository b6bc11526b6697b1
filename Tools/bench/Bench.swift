import ArgumentParser
import Foundation

@main
struct Bench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "openshell-bench",
    abstract: "Benchmarks of the OpenShell gateway's building blocks, with a peer measured in the same run.",
    subcommands: [LogCommand.self, AppendCommand.self, SnapshotCommand.self, ReadCommand.self])
}

struct LogCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "log",
    abstract: "Event log vs SQLite (GRDB): durable appends, bulk load, replay, bytes per event.")

  @Option(help: "Events written and replayed (default 1,000,000; 100,000 with --quick).")
  var events: Int?

  @Flag(help: "Short run: 100k replay events, 1 s per append cell.")
  var quick = false

  @Option(help: "Seconds per append cell (default 4; 1 with --quick).")
  var seconds: Double?

  @Option(help: "Concurrent appenders, comma separated (0 alone: skip the append tables, e.g. for profiling).")
  var concurrency: String = "1,8,64"

  @Option(help: "Work directory (default .build-bench/bench-work, or /tmp if .build-bench is absent).")
  var workDir: String?

  @Flag(help: "Keep the work directory afterwards.")
  var keep = false

  func run() async throws {
    let fm = FileManager.default
    let base = workDir ?? (fm.fileExists(atPath: ".build-bench") ? ".build-bench/bench-work" : NSTemporaryDirectory() + "openshell-bench-\(getpid())")
    try fm.createDirectory(atPath: base, withIntermediateDirectories: true)
    let replay = events ?? (quick ? 100_000 : 1_000_000)
    let settings = LogBenchSettings(
      replayEvents: replay, appendSeconds: seconds ?? (quick ? 1 : 4),
      concurrencies: concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        .filter { $0 > 0 },
      bulkBatch: 4096, dictEvents: min(100_000, max(10_000, replay / 10)), workDir: base)
    guard replay > 0 else { throw ValidationError("nothing to run") }
    let mix = EventMix()
    let started = nowNs()
    print(header(settings, mix: mix, base: base))
    let res = try await LogBench.run(settings) { msg in
      FileHandle.standardError.write(Data("  … \(msg)\n".utf8))
    }
    print(LogReport.render(res, settings))
    print(LogTargets.render(res))
    print(String(format: "total wall time: %.1f s", Double(nowNs() - started) / 1e9))
    if !keep { try? fm.removeItem(atPath: base) }
  }

  func header(_ s: LogBenchSettings, mix: EventMix, base: String) -> String {
    let cores = ProcessInfo.processInfo.activeProcessorCount
    let load =
      (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3)
      .joined(separator: " ") ?? "?"
    let fsType = fileSystemType(base)
    return """
      openshell-bench log
      machine: nproc=\(cores), load average \(load) at start, \(ProcessInfo.processInfo.operatingSystemVersionString)
      work dir: \(base) (file system \(fsType))
      event mix: Scenarios.all cycled (\(mix.templates.count) events per cycle, fresh ids/request ids per cycle), \
      mean payload \(String(format: "%.0f", mix.meanPayload)) B uncompressed
      appends: 1 event per call, \(s.appendSeconds) s per cell, appenders \(s.concurrencies.map(String.init).joined(separator: ",")); \
      ours: EventLog default options (durability .sync, zstd level -1 without a dictionary, 4 with one, group commit ≤ 4096 events); \
      SQLite: GRDB DatabasePool (WAL), one transaction per append
      replay: \(s.replayEvents) events bulk-loaded in batches of \(s.bulkBatch) (one transaction each), chunked reads of 4096
      """
  }
}

/// The file system type of `path` (`stat -f -c %T`), e.g. ext2/ext3 for ext4, tmpfs.
func fileSystemType(_ path: String) -> String {
  let p = Process()
  p.executableURL = URL(fileURLWithPath: "/usr/bin/stat")
  p.arguments = ["-f", "-c", "%T", path]
  let pipe = Pipe()
  p.standardOutput = pipe
  guard (try? p.run()) != nil else { return "?" }
  let data = pipe.fileHandleForReading.readDataToEndOfFile()
  p.waitUntilExit()
  return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}
