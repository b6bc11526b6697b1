import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The byte stream of an upload or download as it passes through the CLI (`producer | openshell |
/// consumer`): counted, bounded by the transfer limit, and shown as a progress bar when stderr is a
/// terminal (at most ten redraws a second; the final state stays on its line).
final class TransferMeter: @unchecked Sendable {
  /// The bytes the stream may carry (the tar stream of at most `limit` payload bytes plus its headers).
  let streamLimit: UInt64
  let limit: UInt64
  /// Expected payload bytes (for the percentage), 0 = unknown.
  let expected: UInt64
  let label: String
  let showBar: Bool
  private(set) var moved: UInt64 = 0
  private(set) var exceeded = false
  private var lastDraw = ContinuousClock.now - .seconds(1)
  private let started = ContinuousClock.now

  init(label: String, expected: UInt64, limit: UInt64, terminal: Bool = isatty(2) == 1) {
    self.label = label
    self.expected = expected
    self.limit = limit
    // tar: a 512-byte header per member (more for long names) and 10 KiB records; 1/64 + 1 MiB covers it.
    streamLimit = limit + limit / 64 + (1 << 20)
    showBar = terminal
  }

  /// Copies `input` to `output` until end of file, a write error or the limit; closes both.
  /// - Returns: false when the limit was exceeded (the stream was cut).
  func pump(from input: Int32, to output: Int32) async -> Bool {
    await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
      Thread.detachNewThread {
        var buffer = [UInt8](repeating: 0, count: 1 << 17)
        outer: while true {
          let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
          if n < 0 && errno == EINTR { continue }
          if n <= 0 { break }
          self.moved += UInt64(n)
          if self.moved > self.streamLimit {
            self.exceeded = true
            break
          }
          var offset = 0
          while offset < n {
            let w = buffer.withUnsafeBytes { write(output, $0.baseAddress! + offset, n - offset) }
            if w > 0 { offset += w } else if w < 0 && errno == EINTR { continue } else { break outer }
          }
          self.draw(final: false)
        }
        close(input)
        close(output)
        self.draw(final: true)
        c.resume(returning: !self.exceeded)
      }
    }
  }

  /// Redraws the bar (at most every 100 ms; `final`: once more, complete, and ends the line).
  private func draw(final: Bool) {
    guard showBar else { return }
    let now = ContinuousClock.now
    guard final || now - lastDraw >= .milliseconds(100) else { return }
    lastDraw = now
    let seconds = max(0.001, Double((now - started).components.attoseconds) / 1e18 + Double((now - started).components.seconds))
    let rate = Double(moved) / seconds
    var line = "\r\(label) "
    if expected > 0 {
      let fraction = min(1, Double(moved) / Double(expected))
      let width = 30
      let filled = Int(fraction * Double(width))
      line += "[" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "] "
      line += String(format: "%3d%% ", Int(fraction * 100))
      line += "\(Self.size(moved))/\(Self.size(expected))"
    } else {
      line += Self.size(moved)
    }
    line += " \(Self.size(UInt64(rate)))/s\u{1B}[K" + (final ? "\n" : "")
    FileHandle.standardError.write(Data(line.utf8))
  }

  /// `123 B`, `4.5 KiB`, `20.0 MiB`, `1.2 GiB`.
  static func size(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n)
    var i = 0
    while v >= 1024, i < units.count - 1 {
      v /= 1024
      i += 1
    }
    return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
  }

  /// Parses `500`, `20M`, `4G`, `1T` (binary units; `K`, `M`, `G`, `T`, optionally followed by `i`/`iB`/`B`).
  static func parseSize(_ text: String) -> UInt64? {
    var t = text.trimmingCharacters(in: .whitespaces).uppercased()
    for suffix in ["IB", "B", "I"] where t.hasSuffix(suffix) && t.count > suffix.count {
      t.removeLast(suffix.count)
      break
    }
    let shifts: [Character: UInt64] = ["K": 10, "M": 20, "G": 30, "T": 40]
    var shift: UInt64 = 0
    if let last = t.last, let s = shifts[last] {
      shift = s
      t.removeLast()
    }
    guard let n = UInt64(t), n <= (UInt64.max >> shift) else { return nil }
    return n << shift
  }
}
