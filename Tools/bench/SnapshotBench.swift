import ArgumentParser
import Foundation
import Projections
import Scenarios

/// `openshell-bench snapshot`: the projection snapshot's encodings (issue 16), binary vs the JSON written
/// before, on a state with N sandboxes: bytes, encode and decode time (median of interleaved rounds).
struct SnapshotCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "snapshot", abstract: "Snapshot encodings of GatewayState: binary (OSB1) vs sorted-key JSON.")

  @Option(help: "Sandboxes in the measured state.")
  var sandboxes: Int = 10_000

  @Option(help: "Interleaved rounds per encoding (the median is reported).")
  var rounds: Int = 9

  func run() async throws {
    var state = try FixtureWriter.project(Scenarios.sandboxLifecycle())
    guard let template = state.sandboxes.values.first else { throw ValidationError("the scenario has no sandbox") }
    for i in 0..<sandboxes {
      var s = template
      s.id = String(format: "00000000-0000-4000-8000-%012d", i)
      s.name = "sandbox-\(i)"
      s.resourceVersion = UInt64(1000 + i)
      state.sandboxes[s.id] = s
    }
    let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
    print("state: \(state.sandboxes.count) sandboxes; load average \(load); \(rounds) interleaved rounds, median")
    var times: [SnapshotCodec.Format: (encode: [Double], decode: [Double])] = [.binary: ([], []), .json: ([], [])]
    var sizes: [SnapshotCodec.Format: Int] = [:]
    for _ in 0..<rounds {
      for format in [SnapshotCodec.Format.json, .binary] {
        var t0 = DispatchTime.now().uptimeNanoseconds
        let bytes = SnapshotCodec.encode(state, as: format)
        let encoded = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        t0 = DispatchTime.now().uptimeNanoseconds
        let decoded = try SnapshotCodec.decode(bytes)
        let decodedMs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        guard decoded == state else { throw ValidationError("\(format) round trip differs") }
        sizes[format] = bytes.count
        times[format]!.encode.append(encoded)
        times[format]!.decode.append(decodedMs)
      }
    }
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    print("format   bytes        encode ms   decode ms")
    for format in [SnapshotCodec.Format.json, .binary] {
      print(
        String(format: "%-8@ %-12d %9.1f   %9.1f", format.rawValue as NSString, sizes[format]!, median(times[format]!.encode), median(times[format]!.decode)))
    }
  }
}
