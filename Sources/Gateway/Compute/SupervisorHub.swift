import Crypto
import Foundation
import GRPCCore
import OpenShellAPI
import SandboxProtocol
import Synchronization

/// The gateway's side of its connections to sandbox supervisors (whatever driver started them):
/// live `ConnectSupervisor` sessions, relay channels being opened, the sandbox log store and the
/// per-sandbox tokens used when the gateway does not verify client certificates.
public final class SupervisorHub: Sendable {
  /// Something that happened to a supervisor session.
  public enum Event: Sendable {
    case connected(sandboxID: String, instanceID: String)
    case disconnected(sandboxID: String, instanceID: String)
    case mainProcessExited(sandboxID: String, exitCode: Int32)
  }

  /// One relay channel: frames from the supervisor, and a way to send frames to it.
  public struct RelayChannel: Sendable {
    /// Frames from the supervisor, in order; finishes when the channel ends.
    public let incoming: AsyncThrowingStream<Data, any Error>
    let incomingContinuation: AsyncThrowingStream<Data, any Error>.Continuation
    let outgoing: AsyncStream<Data>.Continuation
    /// Flow control (byte streams only, see ``openRelay(sandboxID:service:target:flowControl:timeout:)``):
    /// bytes sent but not yet written to the supervisor, and bytes received but not yet consumed.
    public let toSupervisor: ByteCredit?
    /// Credit on received bytes not yet consumed (flow-controlled channels); nil otherwise.
    public let fromSupervisor: ByteCredit?
    /// Sends one frame to the supervisor without waiting for credit.
    public func send(_ data: Data) { outgoing.yield(data) }
    /// Sends once fewer than the limit's bytes are still on their way to the supervisor.
    public func sendWaiting(_ data: Data) async {
      await toSupervisor?.acquire(data.count)
      outgoing.yield(data)
    }
    /// Tells the channel that `count` received bytes were consumed (flow-controlled channels).
    public func consumed(_ count: Int) { fromSupervisor?.release(count) }
    /// Ends the gateway → supervisor direction: the `RelayStream` call then ends, which the supervisor
    /// treats as "stop" (an exec command still running is killed).
    public func finish() {
      outgoing.finish()
      toSupervisor?.close()
    }
    /// Gives up on the channel (the requester's caller went away): ends both directions, so whoever
    /// iterates `incoming` stops waiting for the supervisor and the supervisor is told to stop.
    public func cancel() {
      outgoing.finish()
      incomingContinuation.finish(throwing: CancellationError())
      toSupervisor?.close()
      fromSupervisor?.close()
    }
  }

  struct Session {
    let token: UUID
    let instanceID: String
    let epoch: UInt64
    let outbound: AsyncStream<Openshell_V1_GatewayMessage>.Continuation
    /// Monotonic time of the last message received on the session (ns, `ContinuousClock` based).
    let lastHeard: SessionClock
  }

  /// A session's "last heard" time, shared by the hub and the session's handler.
  final class SessionClock: Sendable {
    private let ns = Atomic<Int64>(0)
    init() { touch() }
    func touch() { ns.store(Self.now(), ordering: .relaxed) }
    var silentFor: Duration { .nanoseconds(Self.now() - ns.load(ordering: .relaxed)) }
    private static let origin = ContinuousClock.now
    static func now() -> Int64 {
      let d = ContinuousClock.now - origin
      return d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
    }
  }

  /// What `register` decided.
  enum Registration {
    case accepted(token: UUID, outbound: AsyncStream<Openshell_V1_GatewayMessage>, clock: SessionClock)
    case refused(RPCError)
  }

  struct PendingRelay {
    let sandboxID: String
    let flowControl: Bool
    let continuation: CheckedContinuation<RelayChannel, any Error>
  }

  /// Log lines of every sandbox (kept outside the event log).
  public let logs: SandboxLogStore
  private let sessions = Mutex<[String: Session]>([:])
  private let pending = Mutex<[String: PendingRelay]>([:])
  private let listener = Mutex<(@Sendable (Event) -> Void)?>(nil)
  /// Signals of accepted sessions whose connect the listener has not handled yet, per sandbox; an entry
  /// goes when the connect is handled, or when the sandbox's session ends (``unregister(sandboxID:token:)``,
  /// ``disconnect(_:)``: stopped, deleted, its supervisor gone), whichever comes first.
  private let connectWaiters = Mutex<[String: [OneShotSignal]]>([:])
  /// Sessions ended because another one took the sandbox over: token → reason (read once by the handler).
  private let superseded = Mutex<[UUID: String]>([:])
  private let expectedInstance = Mutex<(@Sendable (String) -> String?)?>(nil)
  /// A session silent this long may be superseded (supervisors send a heartbeat every 10 s).
  let staleAfter: Duration
  private let tokenKey: SymmetricKey

  /// - Parameters:
  ///   - logDirectory: where sandbox logs live (`<data dir>/sandbox-logs`).
  ///   - tokenKeyPath: a 32-byte secret (created 0600 when missing) from which sandbox tokens are derived.
  public init(logDirectory: String, tokenKeyPath: String, staleAfter: Duration = .seconds(25)) throws {
    logs = SandboxLogStore(directory: logDirectory)
    self.staleAfter = staleAfter
    if let existing = FileManager.default.contents(atPath: tokenKeyPath), existing.count == 32 {
      tokenKey = SymmetricKey(data: existing)
    } else {
      let key = SymmetricKey(size: .bits256)
      let data = key.withUnsafeBytes { Data($0) }
      guard FileManager.default.createFile(atPath: tokenKeyPath, contents: data, attributes: [.posixPermissions: 0o600]) else {
        throw SpawnError("cannot write \(tokenKeyPath)")
      }
      tokenKey = key
    }
  }

  /// Receives session events (the compute driver uses them to mark sandboxes READY).
  public func setListener(_ body: (@Sendable (Event) -> Void)?) { listener.withLock { $0 = body } }

  /// A signal that fires once the listener has handled the sandbox's next `.connected` (``connectHandled(_:)``:
  /// the driver recorded READY, or found nothing to record); nil when no listener runs. The session's
  /// `supervisor.connected` audit waits for it (at most a moment), so that its durable commit does not run
  /// just before READY's: the log's writer flushes one commit after the other, and READY waited for both
  /// (issue 14, CreateSandbox → READY).
  /// Nil too when the session `token` has already ended (its connect will not be handled): an entry is only
  /// made for a registered session, under the sessions' lock, so that the end of the session, which removes
  /// the entries after it removed the session, cannot miss it.
  func expectConnectHandled(_ sandboxID: String, token: UUID) -> OneShotSignal? {
    guard listener.withLock({ $0 }) != nil else { return nil }
    let signal = OneShotSignal()
    let registered = sessions.withLock { s -> Bool in
      guard s[sandboxID]?.token == token else { return false }
      connectWaiters.withLock { $0[sandboxID, default: []].append(signal) }
      return true
    }
    return registered ? signal : nil
  }

  /// The listener has handled the sandbox's connect: fires the signals ``expectConnectHandled(_:token:)`` gave out for it.
  /// Also called when the sandbox's session ends first: its connect will never be handled (a sandbox deleted
  /// before the driver got to it), and neither the entry nor its waiter may stay behind.
  func connectHandled(_ sandboxID: String) {
    let signals = connectWaiters.withLock { $0.removeValue(forKey: sandboxID) } ?? []
    for signal in signals { signal.fire() }
  }

  /// How many signals of ``expectConnectHandled(_:token:)`` for the sandbox have not fired yet (tests).
  func pendingConnectWaiters(_ sandboxID: String) -> Int { connectWaiters.withLock { $0[sandboxID]?.count ?? 0 } }

  func emit(_ event: Event) { listener.withLock { $0 }?(event) }

  // MARK: tokens

  /// The bearer token of one sandbox: hex HMAC-SHA256(secret, "sandbox:<id>").
  public func token(for sandboxID: String) -> String {
    HMAC<SHA256>.authenticationCode(for: Data("sandbox:\(sandboxID)".utf8), using: tokenKey)
      .map { String(format: "%02x", $0) }.joined()
  }

  /// Whether `token` is the token of `claimedSandboxID` (constant-time comparison).
  func verify(token: String, claimedSandboxID: String) -> Bool {
    guard !token.isEmpty, !claimedSandboxID.isEmpty else { return false }
    let expected = Array(self.token(for: claimedSandboxID).utf8)
    let given = Array(token.utf8)
    guard expected.count == given.count else { return false }
    var diff: UInt8 = 0
    for i in 0..<expected.count { diff |= expected[i] ^ given[i] }
    return diff == 0
  }

  // MARK: sessions

  /// Tells the hub which supervisor instance the compute driver launched for a sandbox (nil = unknown).
  public func setExpectedInstance(_ lookup: (@Sendable (String) -> String?)?) { expectedInstance.withLock { $0 = lookup } }

  /// Registers a session unless ``SessionArbitration`` refuses it; a superseded session's outbound stream
  /// is finished and ``supersededReason(_:)`` then names why.
  func register(sandboxID: String, instanceID: String, epoch: UInt64) -> Registration {
    let expected = expectedInstance.withLock { $0 }?(sandboxID)
    let (stream, continuation) = AsyncStream<Openshell_V1_GatewayMessage>.makeStream()
    let token = RandomID.make()
    let clock = SessionClock()
    let outcome = sessions.withLock { s -> (SessionArbitration.Verdict, Session?) in
      let old = s[sandboxID]
      let verdict = SessionArbitration.decide(
        sandboxID: sandboxID, newInstance: instanceID, newEpoch: epoch, expectedInstance: expected,
        incumbent: old.map { ($0.instanceID, $0.epoch, $0.lastHeard.silentFor) }, staleAfter: staleAfter)
      if case .refuse = verdict { return (verdict, nil) }
      s[sandboxID] = Session(token: token, instanceID: instanceID, epoch: epoch, outbound: continuation, lastHeard: clock)
      return (verdict, old)
    }
    switch outcome.0 {
    case .refuse(let code, let reason):
      continuation.finish()
      logs.gateway(sandboxID, "refused a supervisor session: \(reason)")
      return .refused(RPCError(code: code == .failedPrecondition ? .failedPrecondition : .alreadyExists, message: reason))
    case .accept, .supersede:
      if let old = outcome.1 {
        let why = "superseded by a newer session of sandbox \(sandboxID) (instance \(instanceID), epoch \(epoch))"
        superseded.withLock { $0[old.token] = why }
        old.outbound.finish()
        logs.gateway(sandboxID, "supervisor session of instance \(old.instanceID) (epoch \(old.epoch)) \(why)")
      }
      return .accepted(token: token, outbound: stream, clock: clock)
    }
  }

  /// Why the session `token` was superseded (once), or nil if it was not.
  func supersededReason(_ token: UUID) -> String? { superseded.withLock { $0.removeValue(forKey: token) } }

  func unregister(sandboxID: String, token: UUID) {
    let removed = sessions.withLock { s -> Session? in
      guard s[sandboxID]?.token == token else { return nil }
      return s.removeValue(forKey: sandboxID)
    }
    if let removed {
      removed.outbound.finish()
      connectHandled(sandboxID)
      emit(.disconnected(sandboxID: sandboxID, instanceID: removed.instanceID))
    }
  }

  /// The instance id of the connected supervisor of a sandbox, if one is connected.
  public func connectedInstance(_ sandboxID: String) -> String? {
    sessions.withLock { $0[sandboxID]?.instanceID }
  }

  /// Waits (polling every 50 ms, at most `timeout`) until a supervisor of the sandbox is connected.
  /// After a gateway restart, sandboxes that kept running are READY in the log a moment before their
  /// supervisors have reconnected (they retry with ≤ 1 s backoff); callers wait here instead of failing.
  /// - Returns: whether a supervisor is connected.
  public func waitForSession(_ sandboxID: String, timeout: Duration) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while connectedInstance(sandboxID) == nil {
      guard ContinuousClock.now < deadline, !Task.isCancelled else { return false }
      try? await Task.sleep(for: .milliseconds(50))
    }
    return true
  }

  /// Ends a sandbox's session (the driver calls this when it stops or deletes the sandbox, or finds its
  /// supervisor gone); a connect of it that was not handled yet never will be (``connectHandled(_:)``).
  public func disconnect(_ sandboxID: String) {
    let s = sessions.withLock { $0.removeValue(forKey: sandboxID) }
    s?.outbound.finish()
    connectHandled(sandboxID)
  }

  /// Sends a message on the sandbox's live session (e.g. a provider-environment `ConfigUpdate`).
  /// - Returns: false when no supervisor of that sandbox is connected.
  @discardableResult
  public func send(_ message: Openshell_V1_GatewayMessage, to sandboxID: String) -> Bool {
    guard let session = sessions.withLock({ $0[sandboxID] }) else { return false }
    session.outbound.yield(message)
    return true
  }

  // MARK: relays

  /// Asks the sandbox's supervisor to open a relay channel for `service` and waits (≤ `timeout`) until
  /// it has dialled `RelayStream`; a supervisor that is not connected yet is waited for (≤ `timeout`).
  /// - Throws: UNAVAILABLE when no supervisor is connected or it does not answer in time.
  public func openRelay(
    sandboxID: String, service: String, target: Openshell_V1_RelayOpen.OneOf_Target? = nil, flowControl: Bool = false,
    timeout: Duration = .seconds(10)
  ) async throws -> RelayChannel {
    _ = await waitForSession(sandboxID, timeout: timeout)
    guard let session = sessions.withLock({ $0[sandboxID] }) else {
      throw RPCError(code: .unavailable, message: "the supervisor of sandbox \(sandboxID) is not connected")
    }
    let channelID = RandomID.uuid()
    let timer = Task {
      try await Task.sleep(for: timeout)
      self.failRelay(channelID, RPCError(code: .unavailable, message: "the supervisor of sandbox \(sandboxID) did not open relay channel in time"))
    }
    defer { timer.cancel() }
    return try await withCheckedThrowingContinuation { c in
      pending.withLock { $0[channelID] = PendingRelay(sandboxID: sandboxID, flowControl: flowControl, continuation: c) }
      session.outbound.yield(
        .with {
          $0.relayOpen = .with {
            $0.channelID = channelID; $0.serviceID = service; $0.target = target
          }
        })
    }
  }

  func failRelay(_ channelID: String, _ error: any Error) {
    pending.withLock { $0.removeValue(forKey: channelID) }?.continuation.resume(throwing: error)
  }

  /// The `RelayStream` handler's side of a channel.
  struct AcceptedRelay {
    let incoming: AsyncThrowingStream<Data, any Error>.Continuation
    let outgoing: AsyncStream<Data>
    /// Flow-controlled channels: release after writing to the supervisor / acquire after receiving.
    let toSupervisor: ByteCredit?
    let fromSupervisor: ByteCredit?
  }

  /// Called by the `RelayStream` handler: pairs the supervisor's stream with the waiting requester.
  /// - Throws: PERMISSION_DENIED when the channel belongs to another sandbox, NOT_FOUND when unknown.
  func accept(channelID: String, from sandboxID: String) throws -> AcceptedRelay {
    let p = try pending.withLock { all -> PendingRelay in
      guard let p = all[channelID] else { throw RPCErrors.notFound("relay channel \(channelID)") }
      guard p.sandboxID == sandboxID else {
        throw RPCErrors.permissionDenied("relay channel \(channelID) does not belong to sandbox \(sandboxID)")
      }
      all.removeValue(forKey: channelID)
      return p
    }
    let (incoming, inCont) = AsyncThrowingStream<Data, any Error>.makeStream()
    let (outgoing, outCont) = AsyncStream<Data>.makeStream()
    let toSupervisor = p.flowControl ? ByteCredit() : nil
    let fromSupervisor = p.flowControl ? ByteCredit() : nil
    p.continuation.resume(
      returning: RelayChannel(
        incoming: incoming, incomingContinuation: inCont, outgoing: outCont, toSupervisor: toSupervisor, fromSupervisor: fromSupervisor))
    return AcceptedRelay(incoming: inCont, outgoing: outgoing, toSupervisor: toSupervisor, fromSupervisor: fromSupervisor)
  }
}

extension SupervisorHub {
  /// The sandbox a pending relay channel was opened for.
  func pendingOwner(_ channelID: String) -> String? { pending.withLock { $0[channelID]?.sandboxID } }
}
