import EventLog
import Foundation
import Projections
import Scenarios
import Synchronization

/// The fixture event mix: the events of `Scenarios.all`, cycled. Every cycle gets fresh ids (the
/// `-00000000-0000-4000-8000-` part of every scenario id is rewritten with the cycle number, in payloads
/// and aggregate ids, same length so protobuf framing stays valid), a fresh request id, and no timestamp
/// (the log stamps the wall clock).
struct EventMix: Sendable {
  let templates: [NewEvent]
  /// Mean uncompressed payload size in bytes.
  let meanPayload: Double

  init() {
    templates = Scenarios.all.flatMap(\.events)
    meanPayload = Double(templates.reduce(0) { $0 + $1.payload.count }) / Double(max(1, templates.count))
  }

  private static let marker: [UInt8] = Array("-00000000-0000-4000-8000-".utf8)

  /// The `i`-th event of the endless mix (i ≥ 0).
  func event(_ i: Int) -> NewEvent {
    let cycle = i / templates.count
    var e = templates[i % templates.count]
    let tag = Self.tag(cycle)
    e.payload = Self.rewrite(e.payload, tag)
    let id = Array(e.aggregate.id.utf8)
    let newID = Self.rewrite(id, tag)
    if newID != id { e.aggregate.id = String(decoding: newID, as: UTF8.self) }
    e.requestID = "req-\(i)"
    e.timestampNs = nil
    return e
  }

  /// `-xxxxxxxx-0000-4000-8000-` with the cycle in hex: as long as the marker.
  private static func tag(_ cycle: Int) -> [UInt8] {
    var t = marker
    let hex = Array("0123456789abcdef".utf8)
    var v = UInt32(truncatingIfNeeded: cycle)
    for k in stride(from: 8, through: 1, by: -1) {
      t[k] = hex[Int(v & 0xf)]
      v >>= 4
    }
    return t
  }

  private static func rewrite(_ bytes: [UInt8], _ tag: [UInt8]) -> [UInt8] {
    let m = marker
    guard bytes.count >= m.count else { return bytes }
    var out = bytes
    var i = 0
    let first = m[0]
    while i <= out.count - m.count {
      if out[i] == first, out[i + 1] == m[1] {
        var same = true
        for k in 2..<m.count where out[i + k] != m[k] {
          same = false
          break
        }
        if same {
          for k in 0..<m.count { out[i + k] = tag[k] }
          i += m.count
          continue
        }
      }
      i += 1
    }
    return out
  }
}

/// A shared counter handing out event indices to concurrent appenders.
final class Ticket: Sendable {
  private let value = Atomic<Int>(0)
  init(start: Int = 0) { value.store(start, ordering: .relaxed) }
  func next() -> Int { value.add(1, ordering: .relaxed).oldValue }
}

/// Monotonic nanoseconds.
@inline(__always) func nowNs() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// CPU time of the whole process (all threads, user + system) in ns, `CLOCK_PROCESS_CPUTIME_ID`. On a shared
/// machine, events per CPU-second are steadier than events per wall-clock second.
func cpuNs() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
  return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Wall clock ns since the Unix epoch.
func wallNs() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_REALTIME, &ts)
  return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Throughput and latency of one concurrent run.
struct RunResult: Sendable {
  var ops: Int
  var seconds: Double
  var latenciesNs: [UInt64]
  var note: String = ""

  var perSecond: Double { Double(ops) / seconds }
  func percentile(_ p: Double) -> Double {
    guard !latenciesNs.isEmpty else { return 0 }
    let sorted = latenciesNs.sorted()
    let idx = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
    return Double(sorted[idx]) / 1e6
  }
}

/// Runs `body` in `concurrency` tasks, each looping until `seconds` elapsed; measures each call.
func runConcurrent(
  concurrency: Int, seconds: Double, _ body: @escaping @Sendable () async throws -> Void
) async throws -> RunResult {
  let start = nowNs()
  let deadline = start + UInt64(seconds * 1e9)
  let all = try await withThrowingTaskGroup(of: [UInt64].self) { group in
    for _ in 0..<concurrency {
      group.addTask {
        var lat: [UInt64] = []
        lat.reserveCapacity(4096)
        while true {
          let t0 = nowNs()
          if t0 >= deadline { break }
          try await body()
          lat.append(nowNs() - t0)
        }
        return lat
      }
    }
    var merged: [UInt64] = []
    for try await l in group { merged.append(contentsOf: l) }
    return merged
  }
  let elapsed = Double(nowNs() - start) / 1e9
  return RunResult(ops: all.count, seconds: elapsed, latenciesNs: all)
}
