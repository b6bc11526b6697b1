import EventLog
import Foundation
import Projections
import Testing

@testable import Gateway

/// The bound on supervisor session records (``SupervisorSessionAudit``): a reconnect loop writes at most
/// 2 × limit + 1 records per sandbox per window, and every session is still counted.
@Suite struct SupervisorSessionAuditTests {
  static func session(_ sandbox: String, _ n: Int) -> SupervisorSessionAudit.Session {
    .init(
      sandboxID: sandbox, sessionID: "s\(n)", instanceID: "i1", epoch: UInt64(n), peer: "ipv4:127.0.0.1:\(40000 + n)",
      identity: "sandbox:\(sandbox)", certificateSHA256: "")
  }

  static func records(_ log: EventLog) throws -> [GatewayEvent] {
    try log.records(from: 1, filter: EventFilter(types: ["supervisor.connected", "supervisor.disconnected"])).map { try GatewayEvent.decode($0) }
  }

  @Test func aReconnectLoopIsBoundedAndCounted() async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssa-\(UUID().uuidString)").path
    let log = try EventLog.open(directory: dir)
    defer { log.close() }
    let audit = SupervisorSessionAudit(log: log, window: .seconds(2), limit: 5)
    // 40 sessions of one sandbox, each ending at once (a supervisor that keeps reconnecting); one of another.
    for n in 0..<40 {
      await audit.connected(Self.session("sb-loop", n))
      await audit.disconnected(sessionID: "s\(n)", reason: "connection lost")
    }
    await audit.connected(Self.session("sb-calm", 100))
    await audit.disconnected(sessionID: "s100", reason: "the supervisor closed the session")
    var events = try Self.records(log)
    #expect(events.filter { $0.sandboxReference == "sb-loop" }.count == 10, "5 connects + 5 disconnects while the window is open")
    // The window closes on its own: one summary with the 35 sessions not recorded one by one.
    for _ in 0..<100 where events.count < 13 {
      try await Task.sleep(for: .milliseconds(100))
      events = try Self.records(log)
    }
    let loop = events.filter { $0.sandboxReference == "sb-loop" }
    #expect(loop.count == 11)
    guard case .supervisorDisconnected(let summary)? = loop.last?.kind else {
      Issue.record("no summary: \(loop.map(\.typeName))")
      return
    }
    #expect(summary.sessionID.isEmpty && summary.unrecordedSessions == 35 && summary.reason.hasPrefix("reconnect loop"))
    #expect(loop.prefix(10).map(\.typeName) == Array(repeating: ["supervisor.connected", "supervisor.disconnected"], count: 5).flatMap { $0 })
    #expect(events.filter { $0.sandboxReference == "sb-calm" }.count == 2, "another sandbox is not affected")
  }

  @Test func theSessionStillOpenAtTheWindowsEndIsRecordedLateAndItsEndToo() async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssa-\(UUID().uuidString)").path
    let log = try EventLog.open(directory: dir)
    defer { log.close() }
    let audit = SupervisorSessionAudit(log: log, window: .seconds(1), limit: 2)
    for n in 0..<4 {
      await audit.connected(Self.session("sb", n))
      await audit.disconnected(sessionID: "s\(n)", reason: "connection lost")
    }
    await audit.connected(Self.session("sb", 9))  // the one that stays
    try await Task.sleep(for: .milliseconds(1500))
    await audit.disconnected(sessionID: "s9", reason: "the supervisor closed the session")
    let events = try Self.records(log)
    #expect(events.count == 6, "\(events.map(\.typeName))")
    guard case .supervisorConnected(let late)? = events.dropLast().last?.kind, case .supervisorDisconnected(let end)? = events.last?.kind else {
      Issue.record("\(events.map(\.typeName))")
      return
    }
    #expect(late.sessionID == "s9" && late.unrecordedSessions == 2, "the two sessions in between are counted on the late record")
    #expect(end.sessionID == "s9" && end.durationMs >= 1000)
  }
}
