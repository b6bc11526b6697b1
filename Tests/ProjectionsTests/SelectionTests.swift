import Testing

@testable import Projections

/// `GatewayState.select` (the request-window cutoff) must return exactly what sorting would.
@Suite struct SelectionTests {
  @Test func selectMatchesSortedOnRandomArrays() {
    var x: UInt64 = 0x9E37_79B9_7F4A_7C15
    func next() -> UInt64 {
      x ^= x << 13
      x ^= x >> 7
      x ^= x << 17
      return x
    }
    for round in 0..<300 {
      let n = 1 + Int(next() % 300)
      // Every third round draws from a tiny range, so duplicates are exercised too.
      let a = (0..<n).map { _ in round % 3 == 0 ? next() % 5 : next() }
      let sorted = a.sorted()
      for k in [0, n / 2, n - 1, Int(next() % UInt64(n))] {
        var b = a
        #expect(GatewayState.select(&b, k) == sorted[k], "n=\(n) k=\(k)")
      }
    }
  }

  @Test func selectOnAscendingAndDescendingInput() {
    let up = (0..<1000).map { UInt64($0) }
    for k in [0, 1, 499, 998, 999] {
      var a = up
      #expect(GatewayState.select(&a, k) == UInt64(k))
      var d = Array(up.reversed())
      #expect(GatewayState.select(&d, k) == UInt64(k))
    }
  }
}
