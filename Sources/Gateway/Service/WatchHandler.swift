import EventLog
import Foundation
import GRPCCore
import OpenShellAPI
import Projections
import Synchronization

extension OpenShellService {
  /// WatchSandbox: a server stream fed by a catch-up subscription on the log.
  ///
  /// Sends the current sandbox first (when `follow_status`), then — from `resume_after_cursor`
  /// (a seq) or the current head — one `sandbox` message per status change and one `event`
  /// (PlatformEvent) per lifecycle event (when `follow_events`); `event_tail` replays the last N
  /// lifecycle events first. Every message carries `cursor` = the seq it reflects, so a client can
  /// resume after a gateway restart without gaps. The stream ends when the sandbox is deleted, or
  /// at a terminal phase when `stop_on_terminal` is set. Log lines (`follow_logs`) come with the
  /// compute driver; sandbox log lines are not stored in the event log.
  public func watchSandbox(request: Openshell_V1_WatchSandboxRequest, response writer: RPCWriter<Openshell_V1_SandboxStreamEvent>, context: ServerContext)
    async throws
  {
    _ = try userCaller("WatchSandbox")
    // Status/events and log lines come from two tasks; each write waits for the previous one (no buffer in
    // between, so nothing is dropped: a slow client slows the log subscription, which resumes from history
    // when it falls behind, never skipping a record — issue 16).
    try await watchBody(request: request, response: WatchSink(writer: writer))
  }

  /// `follow_logs`: the last `log_tail_lines` lines, then live lines (filtered by `log_sources`,
  /// `log_min_level` and `since_time`), until the watch ends.
  func followLogs(_ id: String, _ request: Openshell_V1_WatchSandboxRequest, _ response: WatchSink) async -> Task<Void, Never>? {
    guard request.followLogs, let hub else { return nil }
    let since = request.hasSinceTime ? request.sinceTime.date : nil
    let live = hub.logs.follow(id)
    if request.logTailLines > 0 {
      for line in hub.logs.lines(id, limit: Int(request.logTailLines), since: since, sources: request.logSources, minLevel: request.logMinLevel).lines {
        try? await response.write(.with { $0.log = line })
      }
    }
    return Task {
      for await line in live where SandboxLogStore.matches(line, since: since, sources: request.logSources, minLevel: request.logMinLevel) {
        do { try await response.write(.with { $0.log = line }) } catch { return }
      }
    }
  }

  func watchBody(request: Openshell_V1_WatchSandboxRequest, response: WatchSink) async throws {
    let state = await store.state
    let ws = try workspace(request.workspaceScope, state)
    guard let current = state.sandbox(named: request.sandbox, workspace: ws) else {
      throw RPCErrors.notFound("sandbox \(ws)/\(request.sandbox)")
    }
    let id = current.id
    let logTask = await followLogs(id, request, response)
    // The log producer ends with the watch, before the handler returns (no write after the RPC ended).
    do {
      try await follow(id, current: current, state: state, request: request, response: response)
    } catch {
      logTask?.cancel()
      await logTask?.value
      throw error
    }
    logTask?.cancel()
    await logTask?.value
  }

  /// The status/event part of a watch (``watchBody(request:response:)``).
  private func follow(
    _ id: String, current: SandboxRecord, state: GatewayState, request: Openshell_V1_WatchSandboxRequest, response: WatchSink
  ) async throws {
    var local = GatewayState()
    local.sandboxes[id] = current
    local.policies[id] = state.policies[id]
    var from = state.lastSeq + 1
    if !request.resumeAfterCursor.isEmpty {
      guard let cursor = UInt64(request.resumeAfterCursor) else {
        throw RPCErrors.invalidArgument(field: "resume_after_cursor", "is not a cursor returned by this gateway")
      }
      from = cursor + 1
    }
    if request.eventTail > 0 {
      let history = try store.log.records(from: 1, through: state.lastSeq, filter: EventFilter(aggregate: .sandbox(id)))
      for record in history.suffix(Int(request.eventTail)) {
        try await response.write(
          .with {
            $0.event = platformEvent(record); $0.cursor = String(record.seq)
          })
      }
    }
    if request.followStatus || request.resumeAfterCursor.isEmpty {
      try await response.write(
        .with {
          $0.sandbox = Wire.sandbox(current, state: local); $0.cursor = String(state.lastSeq)
        })
    }
    if isTerminal(current.phase), request.stopOnTerminal { return }
    for try await item in store.log.subscribe(from: from, filter: EventFilter(aggregate: .sandbox(id))) {
      guard case .record(let record) = item else { continue }
      let event = try GatewayEvent.decode(record)
      local.apply(event, seq: record.seq, timestampNs: record.timestampNs)
      if request.followEvents {
        try await response.write(
          .with {
            $0.event = platformEvent(record, event); $0.cursor = String(record.seq)
          })
      }
      guard let s = local.sandboxes[id] else {
        // Deleted: a final status message (phase DELETING) then the stream ends.
        if request.followStatus {
          var gone = Wire.sandbox(current, state: local)
          gone.status.phase = .deleting
          try await response.write(
            .with {
              $0.sandbox = gone; $0.cursor = String(record.seq)
            })
        }
        return
      }
      if request.followStatus {
        try await response.write(
          .with {
            $0.sandbox = Wire.sandbox(s, state: local); $0.cursor = String(record.seq)
          })
      }
      if request.stopOnTerminal, isTerminal(s.phase) { return }
    }
  }

  func isTerminal(_ phase: SandboxPhase) -> Bool {
    phase == .error || phase == .completed || phase == .stopped
  }

  func platformEvent(_ record: EventRecord, _ decoded: GatewayEvent? = nil) -> Openshell_V1_PlatformEvent {
    let event = decoded ?? (try? GatewayEvent.decode(record))
    return .with {
      $0.eventTime = Wire.timestamp(ns: record.timestampNs)
      $0.source = record.actor == "system" ? "gateway" : record.actor
      $0.type = record.type
      if case .sandboxFailed(let f)? = event?.kind { $0.reason = f.reason; $0.message = f.message }
      $0.metadata = ["seq": String(record.seq), "request_id": record.requestID]
    }
  }
}

/// The write side of a WatchSandbox stream, shared by the status and the log producers: one write at a time,
/// in the order the producers arrive, each awaiting the transport (backpressure end to end).
struct WatchSink: Sendable {
  let writer: RPCWriter<Openshell_V1_SandboxStreamEvent>
  let lock = AsyncSerialLock()

  func write(_ event: Openshell_V1_SandboxStreamEvent) async throws {
    await lock.lock()
    defer { lock.unlock() }
    try await writer.write(event)
  }
}

/// A lock held across an `await` (first come, first served), for serialising writes to one stream.
final class AsyncSerialLock: Sendable {
  private let state = Mutex<(locked: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

  func lock() async {
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
      let acquired = state.withLock { s -> Bool in
        if !s.locked {
          s.locked = true
          return true
        }
        s.waiters.append(c)
        return false
      }
      if acquired { c.resume() }
    }
  }

  /// Hands the lock to the next waiter, if any.
  func unlock() {
    let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
      guard !s.waiters.isEmpty else {
        s.locked = false
        return nil
      }
      return s.waiters.removeFirst()
    }
    next?.resume()
  }
}
