import CoreMetrics
import Foundation
import Prometheus
import Synchronization

/// The gateway's Prometheus metrics, served as text exposition format 0.0.4 on `GET /metrics`.
///
/// | metric | type | labels | unit |
/// |---|---|---|---|
/// | `openshell_grpc_requests_total` | counter | `method` (`openshell.v1.OpenShell/Health`), `code` (`OK`, `NOT_FOUND`, …) | RPCs |
/// | `openshell_grpc_request_duration_seconds` | histogram | `method`, `code` | seconds, from interception to the final status |
/// | `openshell_http_requests_total` | counter | `path` (known routes, else `other`), `status` | requests |
/// | `openshell_log_head_seq` | gauge | — | sequence number of the newest durable event |
/// | `openshell_log_append_seconds` | histogram | — | seconds per durable append (commit included) |
/// | `openshell_audit_export_queued_total` | counter | — | OTLP log records handed to the exporter (``OTLPAuditExporter``) |
/// | `openshell_audit_export_dropped_total` | counter | `reason` (`queue_full`, `export_failed`, `undecodable`) | OTLP log records lost (the log keeps them) |
///
/// Metrics from libraries using swift-metrics land in the same registry after
/// ``bootstrapMetricsSystem()``.
public final class GatewayMetrics: Sendable {
  /// The registry `/metrics` renders.
  public let registry: PrometheusCollectorRegistry

  /// Buckets (seconds) for RPC latency: 0.5 ms … 10 s.
  public static let rpcBuckets: [Double] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
  ]
  /// Buckets (seconds) for log appends: 50 µs … 2.5 s.
  public static let appendBuckets: [Double] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5,
  ]

  private static var rpcCount: MetricNameDescriptor {
    descriptor("openshell_grpc_requests_total", "gRPC requests by method and status code.")
  }
  private static var rpcLatency: MetricNameDescriptor {
    descriptor("openshell_grpc_request_duration_seconds", "gRPC request latency in seconds by method and status code.")
  }
  private static var httpCount: MetricNameDescriptor {
    descriptor("openshell_http_requests_total", "HTTP/1.1 requests by path and status.")
  }

  private static var exportDropped: MetricNameDescriptor {
    descriptor("openshell_audit_export_dropped_total", "Audit OTLP log records dropped (queue full, failed export), by reason.")
  }

  private let headSeq: Prometheus.Gauge
  private let exportQueued: Prometheus.Counter
  private let appendSeconds: ValueHistogram
  private static let bootstrapped = Mutex(false)

  /// Creates the metrics in `registry` (a fresh registry by default, so tests stay independent).
  public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
    self.registry = registry
    headSeq = registry.makeGauge(
      descriptor: Self.descriptor("openshell_log_head_seq", "Sequence number of the newest durable event."))
    appendSeconds = registry.makeValueHistogram(
      descriptor: Self.descriptor("openshell_log_append_seconds", "Durable event-log append latency in seconds."),
      buckets: Self.appendBuckets)
    exportQueued = registry.makeCounter(
      descriptor: Self.descriptor("openshell_audit_export_queued_total", "Audit OTLP log records handed to the exporter."))
  }

  /// Counts one audit log record handed to the OTLP exporter.
  public func recordAuditExportQueued() {
    exportQueued.increment()
  }

  /// Counts `count` audit log records the OTLP export lost; `reason` is one of a fixed set.
  public func recordAuditExportDropped(reason: String, count: Int) {
    registry.makeCounter(descriptor: Self.exportDropped, labels: [("reason", reason)]).increment(by: Int64(count))
  }

  /// Records one finished RPC. `method` is the fully qualified method (`openshell.v1.OpenShell/Health`),
  /// `code` a gRPC status code name as in the gRPC spec's status-codes table (`OK`, `INVALID_ARGUMENT`…).
  public func recordRPC(method: String, code: String, seconds: Double) {
    let labels = [("method", method), ("code", code)]
    registry.makeCounter(descriptor: Self.rpcCount, labels: labels).increment()
    registry.makeValueHistogram(descriptor: Self.rpcLatency, labels: labels, buckets: Self.rpcBuckets)
      .record(seconds)
  }

  /// Sets `openshell_log_head_seq`.
  public func setHeadSeq(_ seq: UInt64) {
    headSeq.set(Double(seq))
  }

  /// Records one durable append's latency in seconds.
  public func recordAppend(seconds: Double) {
    appendSeconds.record(seconds)
  }

  /// Records one HTTP/1.1 response (`path` must come from a bounded set).
  public func recordHTTP(path: String, status: Int) {
    registry.makeCounter(descriptor: Self.httpCount, labels: [("path", path), ("status", String(status))])
      .increment()
  }

  /// The Prometheus text exposition of every metric in ``registry``.
  public func exposition() -> String {
    registry.emitToString()
  }

  /// Bootstraps swift-metrics' global `MetricsSystem` with a `PrometheusMetricsFactory` over
  /// ``registry``. swift-metrics allows one bootstrap per process, so only the first call (on any
  /// instance) has an effect.
  ///
  /// - Returns: true if this call bootstrapped the system.
  @discardableResult
  public func bootstrapMetricsSystem() -> Bool {
    let first = Self.bootstrapped.withLock { done -> Bool in
      defer { done = true }
      return !done
    }
    if first {
      MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }
    return first
  }

  private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
    MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
  }
}
