import ArgumentParser
import EventLog
import Foundation
import Projections

/// `openshell-bench read DIR`: the sequential reader alone and replay (decode + apply) over an existing log,
/// opened read-only, so one log can be measured (or profiled under callgrind) again and again by different
/// builds. `--make N` first writes N events of the fixture mix into DIR (which must not hold a log).
struct ReadCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "read",
    abstract: "Sequential read and replay (decode + apply) of an existing log: events/s and per CPU-second.")

  @Argument(help: "Log directory.")
  var directory: String

  @Option(help: "First write this many fixture-mix events into the directory (it must not hold a log yet).")
  var make: Int?

  @Option(help: "What to time: read, apply or both.")
  var mode: String = "both"

  @Option(help: "Passes of each measure (each pass reads the whole log).")
  var passes: Int = 3

  func run() async throws {
    guard ["read", "apply", "both"].contains(mode) else { throw ValidationError("--mode must be read, apply or both") }
    if let n = make {
      guard n > 0 else { throw ValidationError("--make needs a positive count") }
      guard !FileManager.default.fileExists(atPath: directory + "/data.mdb") else {
        throw ValidationError("\(directory) already holds a log")
      }
      var o = LogBench.quietOptions
      o.durability = .noSync
      let log = try EventLog.open(directory: directory, options: o)
      let mix = EventMix()
      var i = 0
      let ts = wallNs()
      while i < n {
        let k = min(4096, n - i)
        try log.appendSync(
          (i..<(i + k)).map { j in
            var e = mix.event(j)
            e.timestampNs = ts + UInt64(j)
            return e
          })
        i += k
      }
      log.close()
    }
    var o = LogBench.quietOptions
    o.readOnly = true
    let log = try EventLog.open(directory: directory, options: o)
    defer { log.close() }
    let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
    print("log: \(log.headSeq) events; load average \(load)")
    for pass in 1...max(1, passes) {
      if mode != "apply" {
        let (t0, c0) = (nowNs(), cpuNs())
        var count = 0
        var bytes = 0
        try log.forEach(from: 1, chunkSize: 4096) { r in
          count += 1
          bytes &+= r.payload.count
        }
        print(line(pass, "read only", count, nowNs() - t0, cpuNs() - c0))
      }
      if mode != "read" {
        let (t0, c0) = (nowNs(), cpuNs())
        var state = GatewayState()
        try log.forEach(from: 1, chunkSize: 4096) { r in try state.apply(r) }
        print(line(pass, "decode + apply", Int(state.lastSeq), nowNs() - t0, cpuNs() - c0))
      }
    }
  }

  private func line(_ pass: Int, _ what: String, _ n: Int, _ wall: UInt64, _ cpu: UInt64) -> String {
    String(
      format: "pass %d %@ %8d events  %9.0f events/s  %9.0f events per CPU-second", pass,
      what.padding(toLength: 15, withPad: " ", startingAt: 0), n,
      Double(n) / (Double(wall) / 1e9), Double(n) / (Double(cpu) / 1e9))
  }
}
