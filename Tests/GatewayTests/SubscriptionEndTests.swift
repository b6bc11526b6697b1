import Foundation
import GRPCCore
import OpenShellAPI
import Testing

@testable import Gateway

/// Issue 17 (memory growth): a subscription whose client went away must end. grpc-swift 2 only marks
/// such an RPC cancelled; `WatchInferenceBundle` waited for the next change forever, one per sandbox a
/// supervisor ever ran, each holding its HTTP/2 connection's memory (~90 KB per create/delete cycle).
@Suite("Subscriptions end with their client", .timeLimit(.minutes(2)))
struct SubscriptionEndTests {
  /// Finished RPCs of `method` as the gateway's metrics count them (MetricsInterceptor records an RPC
  /// when its handler returns or throws).
  static func finished(_ metrics: GatewayMetrics, _ method: String) -> Int {
    metrics.exposition().split(separator: "\n")
      .filter { $0.contains("_count{") && $0.contains("method=\"\(method)\"") }
      .compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }
      .reduce(0, +)
  }

  @Test("WatchInferenceBundle ends when its client cancels or disconnects")
  func watchEndsWhenTheClientLeaves() async throws {
    let g = try await ConfigGateway.start()
    defer { Task { await g.stop() } }
    let id = try await g.withClients { c, _ in
      try await c.createSandbox(
        .with {
          $0.name = "watcher"; $0.workspaceScope = .ws("default")
        }
      ).sandbox.metadata.id
    }
    let method = "openshell.inference.v1.Inference/WatchInferenceBundle"
    let metrics = g.gw.running.server.metrics
    #expect(Self.finished(metrics, method) == 0)
    // Three supervisors' watches: each client leaves while its watch waits for the next change.
    for _ in 0..<3 {
      try await g.asSandbox(id) { _, inf in
        // The watch is running on the server once its first bundle arrived.
        let (first, arrived) = AsyncStream<Void>.makeStream()
        let watch = Task {
          try await inf.watchInferenceBundle(.init()) { response in for try await _ in response.messages { arrived.yield() } }
        }
        var it = first.makeAsyncIterator()
        _ = await it.next()
        watch.cancel()
        _ = await watch.result
      }
    }
    let deadline = ContinuousClock.now + .seconds(15)
    while ContinuousClock.now < deadline, Self.finished(metrics, method) < 3 { try await Task.sleep(for: .milliseconds(50)) }
    #expect(Self.finished(metrics, method) == 3, "the server-side watches still run after their clients left")
  }
}
