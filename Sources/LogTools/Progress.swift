import Foundation

/// A progress bar on stderr, drawn only when stderr is a terminal (never in pipes or CI logs).
public final class ProgressBar: @unchecked Sendable {
  private let label: String
  private let enabled: Bool
  private var lastDraw = Date.distantPast
  private let lock = NSLock()

  /// A bar titled `label`; disabled (every update a no-op) unless stderr is a terminal.
  public init(label: String) {
    self.label = label
    enabled = isatty(STDERR_FILENO) == 1
  }

  /// Redraws at most ten times a second. `done` and `total` are record counts.
  public func update(_ done: UInt64, _ total: UInt64) {
    guard enabled, total > 0 else { return }
    lock.lock()
    defer { lock.unlock() }
    let now = Date()
    guard done >= total || now.timeIntervalSince(lastDraw) > 0.1 else { return }
    lastDraw = now
    let width = 30
    let fraction = min(1, Double(done) / Double(total))
    let filled = Int(fraction * Double(width))
    let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
    FileHandle.standardError.write(Data("\r\(label) \(bar) \(done)/\(total)".utf8))
    if done >= total { FileHandle.standardError.write(Data("\n".utf8)) }
  }

  /// ``update(_:_:)`` as a closure, for the `progress:` parameters of export, import and verify.
  public var callback: (UInt64, UInt64) -> Void { { [self] in self.update($0, $1) } }
}
