import EventLog
import Foundation
import Logging
import Projections

/// Records supervisor sessions (`ConnectSupervisor` streams) as `supervisor.connected` and
/// `supervisor.disconnected` (issue 12: session establishment), bounded so that a supervisor in a reconnect
/// loop cannot flood the log.
///
/// Bound: per sandbox, a window opens with the first session recorded and lasts `window` (default 60 s); at
/// most `limit` (default 5) sessions starting in it are recorded one by one (a connect and, when it ends, a
/// disconnect). Further sessions in that window are only counted. When the window ends with such sessions
/// counted, one record is written: the `supervisor.connected` of the session still open, if one is (late,
/// with its real `connected_ns`; its end is then recorded as usual), else a summary `supervisor.disconnected`
/// with an empty session id, `unrecorded_sessions` and their total duration. So a sandbox writes at most
/// 2 × `limit` + 1 session records per window, 11 a minute by default, whatever its supervisor does (its
/// reconnect backoff is ≤ 1 s, which would otherwise be up to 120). Every count reaches the log; open
/// windows are flushed by ``flush()`` at shutdown.
///
/// Records are appended before the call proceeds (connect) or ends (disconnect), so a sandbox's connect is
/// always before its disconnect in the log. An append that fails is logged and the session goes on: losing
/// an audit record must not cut a sandbox off its gateway.
actor SupervisorSessionAudit {
  /// What the handler knows about a session when it is accepted.
  struct Session: Sendable {
    var sandboxID: String
    var sessionID: String
    var instanceID: String
    var epoch: UInt64
    var peer: String
    var identity: String
    var certificateSHA256: String
  }

  private struct Live {
    var session: Session
    var connectedNs: Int64
    var started: ContinuousClock.Instant
    var recorded: Bool
  }

  private struct Window {
    var start: ContinuousClock.Instant
    var recorded = 0
    var unrecorded: UInt64 = 0
    var unrecordedMs: Int64 = 0
    var closeScheduled = false
  }

  private let log: EventLog
  let window: Duration
  let limit: Int
  private var live: [String: Live] = [:]  // by session id
  private var windows: [String: Window] = [:]  // by sandbox id
  private let logger = Logger(label: "openshell.gateway.audit")

  init(log: EventLog, window: Duration = .seconds(60), limit: Int = 5) {
    self.log = log
    self.window = window
    self.limit = limit
  }

  /// A session was accepted. Records `supervisor.connected` unless the sandbox's window is full.
  func connected(_ s: Session) async {
    let now = ContinuousClock.now
    var w = windows[s.sandboxID] ?? Window(start: now)
    if now - w.start >= window, !w.closeScheduled { w = Window(start: now) }
    let record = w.recorded < limit
    var entry = Live(session: s, connectedNs: Self.wallNs(), started: now, recorded: record)
    if record {
      w.recorded += 1
      let carried = w.unrecorded
      w.unrecorded = 0
      windows[s.sandboxID] = w
      live[s.sessionID] = entry
      await append(connectEvent(entry, unrecorded: carried), actor: s.identity)
    } else {
      w.unrecorded += 1
      if !w.closeScheduled {
        w.closeScheduled = true
        scheduleClose(s.sandboxID, at: w.start + window)
      }
      windows[s.sandboxID] = w
      entry.recorded = false
      live[s.sessionID] = entry
    }
  }

  /// The session ended (for whatever `reason`). Records `supervisor.disconnected` if its connect was recorded.
  func disconnected(sessionID: String, reason: String) async {
    guard let entry = live.removeValue(forKey: sessionID) else { return }
    let ms = Self.milliseconds(ContinuousClock.now - entry.started)
    let sandboxID = entry.session.sandboxID
    // Forget an idle sandbox's spent window (deleted sandboxes must not accumulate).
    if let w = windows[sandboxID], !w.closeScheduled, ContinuousClock.now - w.start >= window,
      !live.values.contains(where: { $0.session.sandboxID == sandboxID })
    {
      windows[sandboxID] = nil
    }
    guard entry.recorded else {
      windows[entry.session.sandboxID]?.unrecordedMs += ms
      return
    }
    let s = entry.session
    await append(
      GatewayEvent(
        .supervisorDisconnected(
          .with {
            $0.sandboxID = s.sandboxID; $0.sessionID = s.sessionID; $0.instanceID = s.instanceID; $0.peer = s.peer
            $0.durationMs = ms; $0.reason = reason
          })), actor: s.identity)
  }

  /// Writes what open windows still count (at shutdown, after the sessions ended).
  func flush() async {
    for sandboxID in windows.keys.sorted() { await close(sandboxID) }
  }

  private func scheduleClose(_ sandboxID: String, at deadline: ContinuousClock.Instant) {
    Task { [weak self] in
      try? await Task.sleep(until: deadline, clock: .continuous)
      await self?.close(sandboxID)
    }
  }

  private func close(_ sandboxID: String) async {
    guard var w = windows.removeValue(forKey: sandboxID), w.unrecorded > 0 else { return }
    if let (id, entry) = live.first(where: { $0.value.session.sandboxID == sandboxID && !$0.value.recorded }) {
      // The session still open was not recorded: record it now, so its end is recorded too.
      live[id]?.recorded = true
      w.unrecorded -= 1
      windows[sandboxID] = Window(start: ContinuousClock.now, recorded: 1)
      await append(connectEvent(entry, unrecorded: w.unrecorded), actor: entry.session.identity)
      return
    }
    let instance = live.values.first { $0.session.sandboxID == sandboxID }?.session.instanceID ?? ""
    await append(
      GatewayEvent(
        .supervisorDisconnected(
          .with {
            $0.sandboxID = sandboxID; $0.instanceID = instance; $0.durationMs = w.unrecordedMs; $0.unrecordedSessions = w.unrecorded
            $0.reason = "reconnect loop: sessions beyond \(limit) per \(window) not recorded one by one"
          })), actor: "system")
  }

  private func connectEvent(_ entry: Live, unrecorded: UInt64) -> GatewayEvent {
    let s = entry.session
    return GatewayEvent(
      .supervisorConnected(
        .with {
          $0.sandboxID = s.sandboxID; $0.sessionID = s.sessionID; $0.instanceID = s.instanceID; $0.epoch = s.epoch
          $0.peer = s.peer; $0.identity = s.identity; $0.certificateSha256 = s.certificateSHA256
          $0.connectedNs = entry.connectedNs; $0.unrecordedSessions = unrecorded
        }))
  }

  private func append(_ event: GatewayEvent, actor: String) async {
    do {
      _ = try await log.append([event.newEvent(actor: actor, requestID: "")])
    } catch {
      logger.warning("\(event.typeName) of sandbox \(event.sandboxReference ?? "?") not recorded: \(error)")
    }
  }

  private static func wallNs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1e9) }

  private static func milliseconds(_ d: Duration) -> Int64 {
    d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
  }

  /// Sessions being tracked (for tests).
  var liveSessions: Int { live.count }
}
