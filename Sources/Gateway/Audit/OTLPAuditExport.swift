import EventLog
import Foundation
import LogTools
import Logging
import OTel
import Projections
import ServiceLifecycle
import Synchronization

/// Where and how the gateway exports its audit trail as OTLP log records (issue 12; OpenShell users'
/// "OCSF over OTLP logs", upstream #2892). `openshell gateway serve --otlp-endpoint URL` or
/// `$OPENSHELL_OTLP_ENDPOINT`; swift-otel's standard `OTEL_EXPORTER_OTLP_*` variables (headers, TLS files,
/// compression, timeout) apply on top.
public struct OTLPExportSettings: Sendable, Equatable {
  /// The collector's OTLP/gRPC endpoint: `http://host:4317` (plaintext) or `https://host:4317` (TLS).
  public var endpoint: String
  /// Log records held for export at most (swift-otel's batch processor queue); beyond it records are
  /// dropped and counted, never waited for.
  public var queueSize = 2048
  /// Records per export request.
  public var maxBatch = 512
  /// How often a batch is sent.
  public var scheduleDelay: Duration = .milliseconds(500)
  /// How long one export may take (retries of an unavailable collector included) before its batch is
  /// dropped and counted.
  public var exportTimeout: Duration = .seconds(5)
  /// The `service.name` resource attribute.
  public var serviceName = "openshell-gateway"

  /// Export to the OTLP/gRPC logs `endpoint` (e.g. `http://127.0.0.1:4317`) with the defaults above.
  public init(endpoint: String) {
    self.endpoint = endpoint
  }

  /// The settings from `$OPENSHELL_OTLP_ENDPOINT`, nil when it is unset or empty.
  public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> OTLPExportSettings? {
    guard let e = env["OPENSHELL_OTLP_ENDPOINT"], !e.isEmpty else { return nil }
    return OTLPExportSettings(endpoint: e)
  }

  /// Checks the endpoint's shape (scheme http or https, a host and a port).
  /// - Throws: ``GatewayConfigurationError`` naming the endpoint.
  public func validate() throws {
    guard let u = URLComponents(string: endpoint), ["http", "https"].contains(u.scheme ?? ""), u.host?.isEmpty == false, u.port != nil else {
      throw GatewayConfigurationError("OTLP endpoint '\(endpoint)' must be http://HOST:PORT or https://HOST:PORT (OTLP/gRPC, e.g. http://127.0.0.1:4317)")
    }
  }
}

/// A configuration value the gateway cannot start with; the message names it.
public struct GatewayConfigurationError: Error, CustomStringConvertible {
  /// One line naming the setting and what is wrong with it.
  public let description: String
  /// An error with its one-line `description`.
  public init(_ description: String) { self.description = description }
}

/// Exports every record appended after the gateway started as OTLP log records through swift-otel's
/// OTLP/gRPC log exporter: body = the record's OCSF event (JSON, docs/audit-ocsf.md; one log record per OCSF
/// event), attributes `openshell.seq`, `openshell.event_type`, `openshell.actor`, `openshell.aggregate`,
/// `openshell.request_id`, `openshell.timestamp_ns`, `ocsf.class_uid`, `ocsf.type_uid`; severity INFO, WARN for
/// failures (refusals, denials).
///
/// It never slows gateway writes: it reads the log through a catch-up subscription (a reader that falls
/// behind is fed again from history; the writer never waits for it), and hands records to swift-otel's
/// batch processor, whose queue is bounded (``OTLPExportSettings/queueSize``). Records that do not fit,
/// and batches whose export fails or times out (a collector that is down), are dropped and counted in
/// `/metrics` (`openshell_audit_export_dropped_total{reason}`); the log keeps them (replay with
/// `openshell audit`). Delivery is at most once; a restart exports from the head of that time on.
final class OTLPAuditExporter: Sendable {
  let log: EventLog
  let settings: OTLPExportSettings
  let metrics: GatewayMetrics
  /// The first seq exported (the head when the gateway opened its log, plus one).
  let from: UInt64
  let logger = Logger(label: "openshell.audit.otlp")

  init(log: EventLog, settings: OTLPExportSettings, metrics: GatewayMetrics, from: UInt64) {
    self.log = log
    self.settings = settings
    self.metrics = metrics
    self.from = from
  }

  /// swift-otel's configuration: logs only, OTLP/gRPC, its diagnostics into ``OTLPDropCounter``.
  func otelConfiguration() -> OTel.Configuration {
    var c = OTel.Configuration.default
    c.serviceName = settings.serviceName
    c.traces.enabled = false
    c.metrics.enabled = false
    c.logs.enabled = true
    c.logs.level = .info
    c.logs.exporter = .otlp
    c.logs.otlpExporter.protocol = .grpc
    c.logs.otlpExporter.endpoint = settings.endpoint
    c.logs.otlpExporter.timeout = settings.exportTimeout
    c.logs.batchLogRecordProcessor.maxQueueSize = settings.queueSize
    c.logs.batchLogRecordProcessor.maxExportBatchSize = settings.maxBatch
    c.logs.batchLogRecordProcessor.scheduleDelay = settings.scheduleDelay
    c.logs.batchLogRecordProcessor.exportTimeout = settings.exportTimeout
    let metrics = self.metrics
    c.diagnosticLogger = .custom(Logger(label: "openshell.audit.otlp.sdk") { _ in OTLPDropCounter(metrics: metrics) })
    c.diagnosticLogLevel = .warning
    return c
  }

  /// Exports until cancelled; then flushes what is queued (bounded by the export timeout) and stops.
  func run() async {
    let backend: (factory: @Sendable (String) -> any LogHandler, service: any Service)
    do {
      let made = try OTel.makeLoggingBackend(configuration: otelConfiguration())
      backend = (made.factory, made.service)
    } catch {
      logger.error("OTLP audit export disabled: \(error)")
      return
    }
    let audit = Logger(label: "openshell.audit", factory: backend.factory)
    let group = ServiceGroup(configuration: .init(services: [.init(service: backend.service)], logger: logger))
    // Unstructured, so that the gateway's cancellation reaches swift-otel as a graceful shutdown (flush).
    let otel = Task {
      do { try await group.run() } catch { self.logger.warning("OTLP exporter stopped: \(error)") }
    }
    do {
      for try await item in log.subscribe(from: from) {
        guard case .record(let record) = item else { continue }
        emit(record, to: audit)
      }
    } catch {
      if !Task.isCancelled { logger.warning("OTLP audit export: log subscription ended: \(error)") }
    }
    // Cancelled (gateway shutdown) or the log closed: flush what is queued, for at most the export timeout.
    await group.triggerGracefulShutdown()
    let deadline = Task {
      try await Task.sleep(for: self.settings.exportTimeout)
      otel.cancel()
    }
    await otel.value
    deadline.cancel()
  }

  /// Hands one record's OCSF events to swift-otel (never blocks: its handler enqueues).
  func emit(_ record: EventRecord, to audit: Logger) {
    let events: [[String: Any]]
    do {
      events = OCSF.events(record, try GatewayEvent.decode(record))
    } catch {
      metrics.recordAuditExportDropped(reason: "undecodable", count: 1)
      return
    }
    for event in events {
      let failure = event["status_id"] as? Int == 2
      let metadata: Logger.Metadata = [
        "openshell.seq": "\(record.seq)",
        "openshell.event_type": "\(record.type)",
        "openshell.actor": "\(record.actor)",
        "openshell.aggregate": "\(record.aggregate.kind)/\(record.aggregate.id)",
        "openshell.request_id": "\(record.requestID)",
        "openshell.timestamp_ns": "\(record.timestampNs)",
        "ocsf.class_uid": "\(event["class_uid"] as? Int ?? 0)",
        "ocsf.type_uid": "\(event["type_uid"] as? Int ?? 0)",
      ]
      audit.log(level: failure ? .warning : .info, "\(OCSF.encode(event))", metadata: metadata)
      metrics.recordAuditExportQueued()
    }
  }
}

/// swift-otel's diagnostic log handler for the audit export: it counts what the SDK reports lost (records
/// dropped because its queue was full, batches whose export failed) into the gateway's metrics and passes
/// warnings on to the gateway's log. Pinned to swift-otel 1.6.0's messages (Package.swift uses that exact
/// version); GatewayTests.OTLPExportTests checks the counts against a dead collector.
struct OTLPDropCounter: LogHandler {
  let metrics: GatewayMetrics
  var metadata: Logger.Metadata = [:]
  var logLevel: Logger.Level = .warning
  let forward = Logger(label: "openshell.audit.otlp")

  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  func log(event: LogEvent) {
    let all = metadata.merging(event.metadata ?? [:]) { $1 }
    func number(_ key: String) -> Int? {
      guard let v = all[key] else { return nil }
      if case .string(let s) = v { return Int(s) }
      return Int("\(v)")
    }
    let message = event.message.description
    if message.hasPrefix("Log records were dropped"), let n = number("dropped_count") {
      metrics.recordAuditExportDropped(reason: "queue_full", count: n)
    } else if message.hasPrefix("Failed to export batch"), let n = number("batch_size") {
      metrics.recordAuditExportDropped(reason: "export_failed", count: n)
    }
    if event.level >= .warning {
      forward.warning("otlp: \(message)\(event.error.map { " (\($0))" } ?? "")")
    }
  }
}
