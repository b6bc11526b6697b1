import Foundation
import GRPCCore
import OpenShellAPI
import SwiftProtobuf
import Synchronization

/// Buffers log lines and pushes them with PushSandboxLogs (a client stream kept open; at most 50 lines
/// per message, flushed every 200 ms; reconnects with backoff; at most 10,000 lines are buffered while
/// the gateway is unreachable — older ones are dropped).
final class LogPusher: Sendable {
  private let pending = Mutex<[Openshell_V1_SandboxLogLine]>([])
  /// Lines taken from `pending` whose write has not returned yet (changed under `pending`'s lock).
  private let inFlight = Mutex<Int>(0)
  let sandboxID: String

  init(sandboxID: String) { self.sandboxID = sandboxID }

  func log(_ message: String, level: String = "INFO", target: String = "openshell_sandbox", fields: [String: String] = [:]) {
    FileHandle.standardError.write(Data("[\(level)] \(message)\n".utf8))
    add(
      .with {
        $0.sandboxID = sandboxID; $0.level = level; $0.target = target; $0.message = message
        $0.source = "sandbox"; $0.fields = fields; $0.eventTime = .init(date: Date())
      })
  }

  func add(_ line: Openshell_V1_SandboxLogLine) {
    pending.withLock {
      $0.append(line)
      if $0.count > 10_000 { $0.removeFirst($0.count - 10_000) }
    }
  }

  private func take(_ n: Int) -> [Openshell_V1_SandboxLogLine] {
    pending.withLock { p in
      let batch = Array(p.prefix(n))
      p.removeFirst(batch.count)
      inFlight.withLock { $0 += batch.count }
      return batch
    }
  }

  private func putBack(_ lines: [Openshell_V1_SandboxLogLine]) {
    pending.withLock { $0.insert(contentsOf: lines, at: 0) }
  }

  /// Waits (at most `timeout`) until every buffered line has been written to the gateway's stream, e.g.
  /// before reporting the main process's exit, after which the gateway may stop this sandbox.
  func drain(timeout: Duration) async {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if pending.withLock({ p in p.isEmpty && inFlight.withLock { $0 } == 0 }) { return }
      try? await Task.sleep(for: .milliseconds(20))
    }
  }

  func run(_ client: Openshell_V1_OpenShell.Client<some ClientTransport>, metadata: Metadata) async {
    var backoff = Duration.milliseconds(200)
    let id = sandboxID
    while !Task.isCancelled {
      do {
        _ = try await client.pushSandboxLogs(
          request: StreamingClientRequest(metadata: metadata) { writer in
            while !Task.isCancelled {
              let batch = self.take(50)
              if batch.isEmpty {
                try await Task.sleep(for: .milliseconds(200))
                continue
              }
              do {
                try await writer.write(
                  .with {
                    $0.sandboxID = id; $0.logs = batch
                  })
                self.inFlight.withLock { $0 -= batch.count }
              } catch {
                self.putBack(batch)
                self.inFlight.withLock { $0 -= batch.count }
                throw error
              }
            }
          })
        backoff = .milliseconds(200)
      } catch {
        try? await Task.sleep(for: backoff)
        backoff = min(backoff * 2, .seconds(5))
      }
    }
  }
}
