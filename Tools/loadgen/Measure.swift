import Foundation
import Synchronization

/// A shared counter for unique names and round-robin choices.
final class Ticket: Sendable {
  private let value = Atomic<Int>(0)
  func next() -> Int { value.add(1, ordering: .relaxed).oldValue }
}

@inline(__always) func nowNs() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// Throughput and latencies of one cell.
struct RunResult: Sendable {
  var ok: Int
  var errors: Int
  var firstError: String?
  var seconds: Double
  var latenciesNs: [UInt64]
  var note = "-"
  /// Writes the server applied during the cell, when it says (etcd: revision after the newest answered Put
  /// minus the revision before the cell).
  var applied: Int?
  /// CPU seconds (user + system) the whole process spent per answered request during the cell, when measured.
  var cpuPerRequest: Double?

  func percentile(_ sorted: [UInt64], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let idx = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
    return Double(sorted[idx]) / 1e6
  }

  func row(_ rpc: String, _ level: Int) -> [String] {
    let s = latenciesNs.sorted()
    if let firstError { FileHandle.standardError.write(Data("\(rpc) x\(level): first error: \(firstError)\n".utf8)) }
    return [
      rpc, "\(level)", "\(ok)", "\(errors)", String(format: "%.0f", Double(ok) / seconds),
      String(format: "%.2f", percentile(s, 50)), String(format: "%.2f", percentile(s, 99)),
      String(format: "%.2f", percentile(s, 100)), note,
    ]
  }
}

/// Runs `body` in `concurrency` tasks, each looping until `seconds` elapsed; successful calls are timed,
/// failures counted.
func runConcurrent(concurrency: Int, seconds: Double, _ body: @escaping @Sendable () async throws -> Void)
  async throws -> RunResult
{
  let start = nowNs()
  let deadline = start + UInt64(seconds * 1e9)
  let parts = await withTaskGroup(of: ([UInt64], Int, String?).self) { group in
    for _ in 0..<concurrency {
      group.addTask {
        var lat: [UInt64] = []
        var errors = 0
        var first: String?
        while true {
          let t0 = nowNs()
          if t0 >= deadline { break }
          do {
            try await body()
            lat.append(nowNs() - t0)
          } catch {
            errors += 1
            if first == nil { first = "\(error)" }
          }
        }
        return (lat, errors, first)
      }
    }
    var all: [([UInt64], Int, String?)] = []
    for await p in group { all.append(p) }
    return all
  }
  let elapsed = Double(nowNs() - start) / 1e9
  let lat = parts.flatMap(\.0)
  return RunResult(
    ok: lat.count, errors: parts.reduce(0) { $0 + $1.1 }, firstError: parts.compactMap(\.2).first,
    seconds: elapsed, latenciesNs: lat)
}

enum Table {
  static func render(_ head: [String], _ rows: [[String]]) -> String {
    var w = head.map(\.count)
    for r in rows { for (i, c) in r.enumerated() { w[i] = max(w[i], c.count) } }
    func line(_ cells: [String]) -> String {
      cells.enumerated().map { i, c in
        i == 0 ? c.padding(toLength: w[i], withPad: " ", startingAt: 0) : String(repeating: " ", count: w[i] - c.count) + c
      }.joined(separator: "  ")
    }
    return ([line(head), w.map { String(repeating: "-", count: $0) }.joined(separator: "  ")] + rows.map(line))
      .joined(separator: "\n")
  }
}
