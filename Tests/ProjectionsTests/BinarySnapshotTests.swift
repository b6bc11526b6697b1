import EventLog
import Foundation
import Projections
import Scenarios
import Testing

/// The compact binary snapshot encoding (issue 16: snapshots were JSON).
@Suite struct BinarySnapshotTests {
  /// A state with `n` sandboxes (plus every scenario's records), for size comparisons.
  static func bigState(sandboxes n: Int) throws -> GatewayState {
    var state = try FixtureWriter.project(Scenarios.sandboxLifecycle())
    let template = try #require(state.sandboxes.values.first)
    for i in 0..<n {
      var s = template
      s.id = String(format: "00000000-0000-4000-8000-%012d", i)
      s.name = "sandbox-\(i)"
      s.resourceVersion = UInt64(1000 + i)
      state.sandboxes[s.id] = s
    }
    return state
  }

  @Test("binary snapshots round-trip every scenario's state losslessly and deterministically")
  func roundTrip() throws {
    for scenario in Scenarios.all {
      let state = try FixtureWriter.project(scenario)
      let bytes = SnapshotCodec.encode(state)
      #expect(SnapshotCodec.format(of: bytes) == .binary)
      #expect(try SnapshotCodec.decode(bytes) == state, "scenario \(scenario.name)")
      #expect(SnapshotCodec.encode(try SnapshotCodec.decode(bytes)) == bytes)
    }
  }

  @Test("JSON snapshots written before stay readable")
  func oldJSONStillDecodes() throws {
    for scenario in Scenarios.all {
      let state = try FixtureWriter.project(scenario)
      let json = SnapshotCodec.encode(state, as: .json)
      #expect(json.first == UInt8(ascii: "{"))
      #expect(SnapshotCodec.format(of: json) == .json)
      #expect(try SnapshotCodec.decode(json) == state)
    }
  }

  @Test("binary is smaller than JSON (sizes printed)")
  func size() throws {
    for n in [0, 1000] {
      let state = try Self.bigState(sandboxes: n)
      let json = SnapshotCodec.encode(state, as: .json).count
      let binary = SnapshotCodec.encode(state).count
      print("snapshot size with \(state.sandboxes.count) sandboxes: JSON \(json) bytes, binary \(binary) bytes (\(binary * 100 / json) %)")
      #expect(binary < json)
    }
  }

  @Test("damaged binary snapshots throw DecodingError, never crash")
  func damaged() throws {
    let bytes = SnapshotCodec.encode(try Self.bigState(sandboxes: 20))
    #expect(throws: DecodingError.self) { try SnapshotCodec.decode(Array(bytes.prefix(bytes.count / 2))) }
    #expect(throws: DecodingError.self) { try SnapshotCodec.decode(bytes + [0]) }
    var rng = SystemRandomNumberGenerator()
    for _ in 0..<300 {
      var flipped = bytes
      let i = Int.random(in: 4..<flipped.count, using: &rng)
      flipped[i] ^= UInt8.random(in: 1...255, using: &rng)
      // Either an error or some state: the log's checksums catch stored damage; this must only not crash.
      _ = try? SnapshotCodec.decode(flipped)
    }
  }
}
