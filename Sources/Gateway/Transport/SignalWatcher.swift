import Dispatch
import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Delivers POSIX signals through Dispatch signal sources while it lives. The default disposition of
/// each watched signal is replaced by SIG_IGN (otherwise SIGTERM would still kill the process) and
/// restored by ``cancel()``.
final class SignalWatcher {
  private let sources: [any DispatchSourceSignal]
  private let previous: [(Int32, sighandler_t?)]
  private let queue = DispatchQueue(label: "openshell.gateway.signals")


  init(signals: [Int32], handler: @escaping @Sendable (Int32) -> Void) {
    var sources: [any DispatchSourceSignal] = []
    var previous: [(Int32, sighandler_t?)] = []
    for number in signals {
      previous.append((number, signal(number, SIG_IGN)))
      let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
      source.setEventHandler { handler(number) }
      source.resume()
      sources.append(source)
    }
    self.sources = sources
    self.previous = previous
  }

  /// Stops watching and restores the previous dispositions.
  func cancel() {
    for source in sources { source.cancel() }
    for (number, handler) in previous { signal(number, handler) }
  }
}
