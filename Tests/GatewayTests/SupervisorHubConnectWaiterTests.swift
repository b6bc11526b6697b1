import Foundation
import Testing

@testable import Gateway

/// A session's `supervisor.connected` audit waits for the driver to handle its connect
/// (``SupervisorHub/expectConnectHandled(_:token:)``); when the sandbox is deleted (or its supervisor ends)
/// before that, the wait must end and nothing may stay behind in the hub.
@Suite struct SupervisorHubConnectWaiterTests {
  func makeHub() throws -> SupervisorHub {
    let dir = try GatewayTestSupport.temporaryDirectory("hub")
    let hub = try SupervisorHub(logDirectory: dir + "/sandbox-logs", tokenKeyPath: dir + "/token.key")
    hub.setListener { _ in }
    return hub
  }

  /// Registers a session of `sandboxID`; its token, nil when refused.
  func accept(_ hub: SupervisorHub, _ sandboxID: String) -> UUID? {
    guard case .accepted(let token, _, _) = hub.register(sandboxID: sandboxID, instanceID: "instance-1", epoch: 1) else { return nil }
    return token
  }

  /// Whether `signal` fires within `limit` (it is waited for up to 10 s).
  func fires(_ signal: OneShotSignal, within limit: Duration = .seconds(2)) async -> Bool {
    let start = ContinuousClock.now
    await signal.wait(timeout: .seconds(10))
    return ContinuousClock.now - start < limit
  }

  @Test func deletedBeforeTheConnectWasHandled() async throws {
    let hub = try makeHub()
    let token = try #require(accept(hub, "sb-deleted"))
    let signal = try #require(hub.expectConnectHandled("sb-deleted", token: token))
    #expect(hub.pendingConnectWaiters("sb-deleted") == 1)
    // The driver deletes the sandbox (and so ends its session) before it got to the connect.
    hub.disconnect("sb-deleted")
    #expect(hub.pendingConnectWaiters("sb-deleted") == 0)
    #expect(await fires(signal))
    // The session's handler, late: no entry for a session that is already gone.
    #expect(hub.expectConnectHandled("sb-deleted", token: token) == nil)
    #expect(hub.pendingConnectWaiters("sb-deleted") == 0)
  }

  @Test func sessionEndedBeforeTheConnectWasHandled() async throws {
    let hub = try makeHub()
    let token = try #require(accept(hub, "sb-gone"))
    let signal = try #require(hub.expectConnectHandled("sb-gone", token: token))
    hub.unregister(sandboxID: "sb-gone", token: token)
    #expect(hub.pendingConnectWaiters("sb-gone") == 0)
    #expect(await fires(signal))
  }

  @Test func handledConnectsAndOtherSandboxes() async throws {
    let hub = try makeHub()
    let a = try #require(accept(hub, "sb-a"))
    let b = try #require(accept(hub, "sb-b"))
    let signalA = try #require(hub.expectConnectHandled("sb-a", token: a))
    let signalB = try #require(hub.expectConnectHandled("sb-b", token: b))
    // Another sandbox's end leaves this one's wait alone; its own handled connect ends it.
    hub.disconnect("sb-b")
    #expect(await fires(signalB))
    #expect(hub.pendingConnectWaiters("sb-a") == 1)
    hub.connectHandled("sb-a")
    #expect(await fires(signalA))
    #expect(hub.pendingConnectWaiters("sb-a") == 0)
  }
}
