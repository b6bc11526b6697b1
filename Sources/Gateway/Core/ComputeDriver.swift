import Foundation
import Projections

/// The protocol between the gateway and a compute driver (local processes, later podman or
/// Kubernetes). Drivers are reactors: the gateway appends the *request* events (sandbox requested,
/// stopping, starting, deleting) and the driver performs side effects after those events are
/// durable, reporting outcomes back through `GatewayStore.record` as new events
/// (provisioning, ready, failed, stopped, deleted, main process exited).
///
/// A driver must be idempotent across replays: given the same event it never starts a sandbox twice
/// (it keeps a checkpoint in the log, see `EventLog.setCheckpoint`).
public protocol ComputeDriver: Sendable {
  /// Short name reported in GetGatewayInfo and in `sandbox.provisioning` events, e.g. `local`.
  var name: String { get }
  /// Rejects specs the driver cannot honour (FAILED_PRECONDITION with what it supports instead).
  /// - Returns: nil when supported, else the message.
  func unsupported(spec: Data) -> String?
  /// Starts reacting to the log; returns when cancelled.
  func run(store: GatewayStore) async throws
}

extension ComputeDriver {
  /// Default: every spec is supported.
  public func unsupported(spec: Data) -> String? { nil }
}
