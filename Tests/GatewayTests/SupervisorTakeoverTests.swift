import Foundation
import GRPCCore
import OpenShellAPI
import Synchronization
import Testing

@testable import Gateway

/// Issue 17: a second connection presenting a sandbox's identity must not strand the genuine supervisor.
@Suite struct SupervisorTakeoverTests {
  /// The arbitration rules themselves (``SessionArbitration``).
  @Test func arbitrationRules() {
    let stale = Duration.seconds(25)
    func decide(_ new: String, _ expected: String?, _ incumbent: (String, UInt64, Duration)?) -> SessionArbitration.Verdict {
      SessionArbitration.decide(
        sandboxID: "s", newInstance: new, newEpoch: 7, expectedInstance: expected,
        incumbent: incumbent.map { (instance: $0.0, epoch: $0.1, silentFor: $0.2) }, staleAfter: stale)
    }
    // Another instance than the one the driver launched: refused, with or without an incumbent.
    guard case .refuse(.failedPrecondition, _) = decide("evil", "real", nil) else { Issue.record("foreign instance accepted"); return }
    guard case .refuse(.failedPrecondition, _) = decide("evil", "real", ("real", 1, .seconds(1))) else { Issue.record("foreign instance accepted"); return }
    #expect(decide("real", "real", nil) == .accept)
    // The genuine instance takes the sandbox back from a session of another instance at once.
    #expect(decide("real", "real", ("evil", 99, .seconds(0))) == .supersede)
    // A live incumbent keeps the sandbox against a copy of its instance id (whatever epoch it claims)...
    guard case .refuse(.alreadyExists, _) = decide("real", "real", ("real", 1, .seconds(3))) else { Issue.record("live session taken over"); return }
    // ...and a silent one is superseded (a supervisor reconnecting after its connection died).
    #expect(decide("real", "real", ("real", 1, .seconds(30))) == .supersede)
    #expect(decide("x", nil, ("x", 1, .seconds(30))) == .supersede)
    guard case .refuse(.alreadyExists, _) = decide("x", nil, ("x", 1, .seconds(1))) else { Issue.record("live session taken over"); return }
  }

  /// Tries `ConnectSupervisor` as the sandbox: nil when the gateway accepted the session (the call is then
  /// ended by the test), else the status it answered.
  static func attempt(_ gw: SandboxGateway, cert: String, key: String, sandboxID: String, instance: String, epoch: UInt64) async throws -> RPCError.Code? {
    try await gw.withClient(cert: cert, key: key) { c in
      do {
        try await c.connectSupervisor(
          request: StreamingClientRequest { w in
            try await w.write(
              .with {
                $0.hello = .with {
                  $0.sandboxID = sandboxID; $0.instanceID = instance; $0.connectionEpoch = epoch
                }
              })
            try await Task.sleep(for: .seconds(5))
          }
        ) { r in
          for try await m in r.messages { if case .sessionAccepted? = m.payload { return } }
        }
        return nil
      } catch let e as RPCError {
        return e.code
      }
    }
  }

  @Test func impostorSessionsCannotStrandTheGenuineSupervisor() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    let id = try await gw.withClient { c in
      let s = try await c.create("takeover")
      try await c.wait("takeover", .ready)
      return s.metadata.id
    }
    let hub = try #require(gw.running.driver?.hub)
    let genuine = try #require(hub.connectedInstance(id))
    let (cert, key) = try gw.sandboxCertificate(id)

    // Another instance with the sandbox's certificate: refused; the genuine session stays.
    #expect(try await Self.attempt(gw, cert: cert, key: key, sandboxID: id, instance: "impostor", epoch: 1_000_000) == .failedPrecondition)
    #expect(hub.connectedInstance(id) == genuine)
    // A copy of the genuine instance id while the genuine supervisor is live: refused too.
    #expect(try await Self.attempt(gw, cert: cert, key: key, sandboxID: id, instance: genuine, epoch: 1_000_000) == .alreadyExists)
    #expect(hub.connectedInstance(id) == genuine)
    // The genuine supervisor still serves the sandbox.
    try await gw.withClient { c in
      let r = try await c.exec("takeover", ["echo", "still-mine"])
      #expect(r.out == "still-mine\n")
      try await c.deleteAndWait("takeover")
    }
  }

  /// End to end (real sandbox, real supervisor): a session superseded by another is told — its stream ends
  /// ABORTED naming why — and the genuine supervisor, superseded first, reconnects and wins the sandbox
  /// back within seconds. Before issue 17 the genuine supervisor was stranded.
  @Test func supersededSessionsAreToldAndTheGenuineSupervisorWinsBack() async throws {
    // Sessions silent for 2 s may be superseded (supervisors send a heartbeat every 10 s).
    let gw = try await SandboxGateway.start { $0.supervisorStaleAfter = .seconds(2) }
    defer { Task { await gw.stopEverything() } }
    let id = try await gw.withClient { c in
      let s = try await c.create("takeback")
      try await c.wait("takeback", .ready)
      return s.metadata.id
    }
    let hub = try #require(gw.running.driver?.hub)
    let genuine = try #require(hub.connectedInstance(id))
    let supervisor = try #require(gw.running.driver?.supervisorPID(id))
    let (cert, key) = try gw.sandboxCertificate(id)
    try await Task.sleep(for: .seconds(3))

    // A copy of the genuine instance id takes the now silent session over...
    final class Seen: Sendable { let accepted = Atomic<Bool>(false) }
    let seen = Seen()
    let started = ContinuousClock.now
    let ended: RPCError? = try await gw.withClient(cert: cert, key: key) { c in
      do {
        try await c.connectSupervisor(
          request: StreamingClientRequest { w in
            try await w.write(
              .with {
                $0.hello = .with {
                  $0.sandboxID = id; $0.instanceID = genuine; $0.connectionEpoch = 1_000_000
                }
              })
            try await Task.sleep(for: .seconds(30))
          }
        ) { r in
          for try await m in r.messages { if case .sessionAccepted? = m.payload { seen.accepted.store(true, ordering: .relaxed) } }
        }
        return nil
      } catch let e as RPCError {
        return e
      }
    }
    // ...and is superseded in turn by the genuine supervisor, which was told and reconnected.
    let accepted = seen.accepted.load(ordering: .relaxed)
    #expect(accepted, "the copy was accepted over the silent session")
    #expect(ended?.code == .aborted, "\(String(describing: ended))")
    #expect(ended?.message.contains("superseded by a newer session of sandbox \(id)") == true, "\(String(describing: ended))")
    #expect(ContinuousClock.now - started < .seconds(10), "the genuine supervisor won back within seconds")
    #expect(hub.connectedInstance(id) == genuine)
    #expect(gw.running.driver?.supervisorPID(id) == supervisor, "the same supervisor process reconnected")
    try await gw.withClient { c in
      let r = try await c.exec("takeback", ["echo", "mine-again"])
      #expect(r.out == "mine-again\n")
      try await c.deleteAndWait("takeback")
    }
  }
}
