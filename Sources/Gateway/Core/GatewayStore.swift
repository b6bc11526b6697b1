import EventLog
import Foundation
import GRPCCore
import LogTools
import Logging
import Projections
import Synchronization

/// What a command decided: the events to append (in order, atomically), the names it claims while
/// its append is in flight, and optimistic-concurrency expectations per aggregate.
struct Decision: Sendable {
  var events: [GatewayEvent]
  /// Keys such as `sandbox/default/happy-otter`, held exclusively while the append is in flight; a second
  /// command claiming the same key waits for it and decides again (two concurrent creates: exactly one wins).
  var claims: [String] = []
  /// Keys held shared (e.g. `workspace/<name>` by a create in that workspace): any number of commands may
  /// hold one at once, but not while another command holds it exclusively (deleting that workspace).
  var sharedClaims: [String] = []
  var expecting: [AggregateRef: ExpectedVersion] = [:]
  /// Id of the object the command acted on (e.g. the sandbox a delete resolved), for the response.
  var target: String = ""
  /// Set when the command found nothing to do because the object is already in the requested state.
  var noop: Bool = false
}

/// The command side and the current projection of the gateway.
///
/// Commands are decided against the current `GatewayState` and appended to the event log; the
/// state is then advanced by applying the records read back from the log in seq order. The actor
/// suspends while an append is in flight, so many commands share one group commit; claims keep
/// names unique across those in-flight commands.
///
/// The projection itself sits in a lock, not in the actor: the actor is its only writer (it applies
/// records in place, under the lock), and queries read it with ``read(_:)`` without entering the actor
/// (issue 14: GetSandbox at c=64 queued behind commands on the actor and paid an actor hop per call).
public actor GatewayStore {
  /// The gateway's event log.
  public nonisolated let log: EventLog
  /// The projection, written only by this actor (``catchUp()``), read by anyone through ``read(_:)``.
  private nonisolated let projection: Mutex<GatewayState>
  /// The projection: every record up to `state.lastSeq` applied (a copy; see ``read(_:)`` for queries).
  public var state: GatewayState { projection.withLock { $0 } }
  private var claims: Set<String> = []
  /// Shared claims held by in-flight commands, with counts (e.g. creates in a workspace).
  private var sharedClaims: [String: Int] = [:]
  /// Commands waiting for a conflicting claim to be released.
  private var claimWaiters: [CheckedContinuation<Void, Never>] = []
  private var lastSnapshotSeq: UInt64
  /// The periodic snapshot being written, if any (``snapshotInBackground()``).
  private var backgroundSnapshot: Task<Void, Never>?
  /// A periodic snapshot is written after at least this many records, and at shutdown; see
  /// ``snapshotDue``.
  public let snapshotInterval: UInt64
  private let logger = Logger(label: "openshell.gateway.store")
  private let metrics: GatewayMetrics?
  /// What start-up had to work around (e.g. a damaged snapshot it fell back from); also logged as warnings.
  public nonisolated let startupWarnings: [String]
  /// The seq of the snapshot start-up loaded (0 = none: every record was replayed).
  public nonisolated let loadedSnapshotSeq: UInt64

  /// Opens the projection: newest snapshot plus the tail of the log (`decodedAhead`: the snapshot as decoded
  /// during the log's open, see ``StateLoader/load(_:progress:decodedAhead:)``).
  /// - Throws: `EventLogError`, `ProjectionError`.
  public init(log: EventLog, snapshotInterval: UInt64 = 10_000, metrics: GatewayMetrics? = nil, decodedAhead: SnapshotDecodeAhead? = nil) throws {
    self.log = log
    let loaded = try StateLoader.load(log, decodedAhead: decodedAhead)
    projection = Mutex(loaded.state)
    lastSnapshotSeq = loaded.snapshotSeq
    loadedSnapshotSeq = loaded.snapshotSeq
    self.snapshotInterval = snapshotInterval
    self.metrics = metrics
    startupWarnings = loaded.warnings
    for w in loaded.warnings { Logger(label: "openshell.gateway.store").warning("\(w)") }
  }

  /// Decides and appends a command. `decide` runs on the current state and throws the RPC error
  /// to return when the command is invalid; nothing is appended then.
  ///
  /// Every decision is taken on a state that includes every earlier accepted command (issue 16): when a
  /// command claims a key that an in-flight command holds (the same object, the same request id, or a
  /// workspace that one deletes while another creates in it), it waits until that append has landed and
  /// decides again on the new state, so two creates of one name answer OK and ALREADY_EXISTS (from
  /// `decide`), a Stop racing a Delete answers as it would one after the other, and a retry racing its
  /// first attempt returns what that attempt did. `decide` may therefore run more than once.
  ///
  /// Idempotency is keyed on (request id, `rpc`, `target`): a request id seen before under the same RPC
  /// and target returns what that request did; under another RPC or target it is INVALID_ARGUMENT (a
  /// reused request id, never a silent no-op). Records written before the RPC was stamped only match by id.
  /// - Parameters:
  ///   - rpc: the RPC name (e.g. `CreateSandbox`); stamped on the command's first event with `target`.
  ///   - target: the object as the request names it (e.g. `default/my-sandbox`; `""` for a generated name).
  /// - Returns: the state after the command's records were applied, and the seqs appended.
  @discardableResult
  func execute(
    actor: String, requestID: String, rpc: String = "", target: String = "", _ decide: @Sendable (GatewayState) throws -> Decision
  ) async throws -> (state: GatewayState, seqs: ClosedRange<UInt64>?, decision: Decision) {
    let (seqs, decision) = try await decideAndAppend(actor: actor, requestID: requestID, rpc: rpc, target: target, decide)
    return (state, seqs, decision)
  }

  /// Runs `body` on the current projection without entering the actor, under the projection's lock.
  ///
  /// It sees every command that has returned (read-your-writes: a command's records are applied before
  /// ``execute(actor:requestID:rpc:target:_:)`` returns). `body` must be short and must not suspend or
  /// call back into the store: commands applying records wait for it. Return small values (a response),
  /// not the state: a copy held while the actor applies makes that apply copy what it touches.
  /// - Throws: what `body` throws.
  public nonisolated func read<R: Sendable>(_ body: (GatewayState) throws -> R) throws -> R {
    try projection.withLock { state throws -> R in try body(state) }
  }

  /// ``execute(actor:requestID:rpc:target:_:)`` that hands the caller what `respond` takes from the state
  /// after the command's records were applied, instead of a copy of the state. `respond` runs on the actor,
  /// right after the apply; small values out of it keep the state's storage uniquely owned, so the next
  /// apply mutates it in place. (A state copy held by a handler while another command applies makes that
  /// apply copy every dictionary it touches, O(state) per commit: issue 14, CreateSandbox at c=64.)
  func execute<R: Sendable>(
    actor: String, requestID: String, rpc: String = "", target: String = "", _ decide: @Sendable (GatewayState) throws -> Decision,
    respond: @Sendable (GatewayState, ClosedRange<UInt64>?, Decision) throws -> R
  ) async throws -> R {
    let (seqs, decision) = try await decideAndAppend(actor: actor, requestID: requestID, rpc: rpc, target: target, decide)
    return try respond(state, seqs, decision)
  }

  /// The command loop of ``execute(actor:requestID:rpc:target:_:)``: decide, claim, append, apply.
  private func decideAndAppend(
    actor: String, requestID: String, rpc: String, target: String, _ decide: @Sendable (GatewayState) throws -> Decision
  ) async throws -> (seqs: ClosedRange<UInt64>?, decision: Decision) {
    while true {
      // A retried request (same request id) does not act twice: it returns the object it acted on.
      if !requestID.isEmpty, let seq = projection.withLock({ $0.requests[requestID] }), let prior = try? log.record(at: seq) {
        try Self.checkRetry(prior, requestID: requestID, rpc: rpc, target: target)
        return (nil, Decision(events: [], target: prior.aggregate.id, noop: true))
      }
      var decision = try decide(state)
      guard !decision.events.isEmpty else { return (nil, decision) }
      if !requestID.isEmpty { decision.claims.append("request/\(requestID)") }
      if claimsConflict(decision) {
        await claimReleased()
        continue
      }
      claims.formUnion(decision.claims)
      for c in decision.sharedClaims { sharedClaims[c, default: 0] += 1 }
      defer { release(decision) }
      let rid = requestID.isEmpty ? RandomID.uuid() : requestID
      var stamped = decision.events
      if !requestID.isEmpty, !rpc.isEmpty {
        stamped[0].requestRpc = rpc
        stamped[0].requestTarget = target
      }
      let events = stamped.map { $0.newEvent(actor: actor, requestID: rid) }
      let started = ContinuousClock.now
      // An `EventLogError` carries its own status (ABORTED for a conflict; ``ErrorFunnel``).
      let range = try await log.append(events, expecting: decision.expecting)
      metrics?.recordAppend(seconds: (ContinuousClock.now - started).seconds)
      try catchUp()
      return (range, decision)
    }
  }

  /// INVALID_ARGUMENT when the record a request id first produced came from another RPC or target.
  static func checkRetry(_ prior: EventRecord, requestID: String, rpc: String, target: String) throws {
    guard !rpc.isEmpty, let event = try? GatewayEvent.decode(prior), !event.requestRpc.isEmpty else { return }
    guard event.requestRpc != rpc || event.requestTarget != target else { return }
    let earlier = event.requestTarget.isEmpty ? event.requestRpc : "\(event.requestRpc) of \(event.requestTarget)"
    throw RPCErrors.invalidArgument(
      field: "request_id",
      "request id \(requestID.debugDescription) was already used by \(earlier) (seq \(prior.seq)); a different request needs a new request id")
  }

  /// Whether `decision` claims a key an in-flight command holds (exclusive against anything, shared
  /// against exclusive).
  private func claimsConflict(_ decision: Decision) -> Bool {
    decision.claims.contains { claims.contains($0) || sharedClaims[$0] != nil }
      || decision.sharedClaims.contains { claims.contains($0) }
  }

  /// Suspends until some in-flight command releases its claims.
  private func claimReleased() async {
    await withCheckedContinuation { claimWaiters.append($0) }
  }

  private func release(_ decision: Decision) {
    claims.subtract(decision.claims)
    for c in decision.sharedClaims {
      let n = (sharedClaims[c] ?? 1) - 1
      sharedClaims[c] = n > 0 ? n : nil
    }
    let waiters = claimWaiters
    claimWaiters.removeAll()
    for w in waiters { w.resume() }
  }

  /// Appends events decided by a reactor (actor `system` unless given), e.g. driver outcomes.
  @discardableResult
  public func record(_ events: [GatewayEvent], actor: String = "system", requestID: String = "") async throws -> GatewayState {
    try await execute(actor: actor, requestID: requestID) { _ in Decision(events: events) }.state
  }

  /// Applies every record the log has beyond `state.lastSeq`; writes a snapshot when due.
  public func catchUp() throws {
    let head = log.headSeq
    let log = self.log
    let applied = try projection.withLock { state throws -> UInt64? in
      guard head > state.lastSeq else { return nil }
      try StateLoader.replay(log, into: &state, through: .head)
      return state.lastSeq
    }
    guard let applied else { return }
    metrics?.setHeadSeq(applied)
    if snapshotDue { snapshotInBackground() }
  }

  /// Whether a periodic snapshot is due: after `max(snapshotInterval, objects in the state)` records (at
  /// most 100,000), the objects being sandboxes plus remembered request ids. Encoding costs time in proportion to the state
  /// (about 2 s of CPU for 10k sandboxes on the 2-core CI machine), so a fixed interval of 1,000 records
  /// spent a core on snapshots at 1k CreateSandbox/s (issue 14, profiled); this way each record pays at most
  /// about one object's encoding. A restart after a crash replays at most that many records; a graceful
  /// stop saves a snapshot at the head (``snapshot()``), so a restart after it replays nothing.
  var snapshotDue: Bool {
    let (objects, lastSeq) = projection.withLock { (UInt64($0.sandboxes.count + $0.requests.count), $0.lastSeq) }
    return lastSeq - lastSnapshotSeq >= max(snapshotInterval, min(objects, 100_000))
  }

  /// Takes a periodic snapshot off the command path (issue 16: encoding and the fsync'd write blocked every
  /// command while the actor waited): the state is a value, so a copy is encoded and written by a detached
  /// task while commands go on. At most one such task runs; a due snapshot while one runs waits for the next.
  private func snapshotInBackground() {
    guard backgroundSnapshot == nil else { return }
    let copy = state
    guard copy.lastSeq > lastSnapshotSeq else { return }
    lastSnapshotSeq = copy.lastSeq
    let (log, logger) = (self.log, self.logger)
    backgroundSnapshot = Task.detached(priority: .utility) { [weak self] in
      Self.write(copy, to: log, logger: logger)
      await self?.backgroundSnapshotEnded()
    }
  }

  private func backgroundSnapshotEnded() { backgroundSnapshot = nil }

  /// Writes a snapshot of the current state now, after any background snapshot has finished (shutdown,
  /// tests). Errors are logged; the log stays the source of truth.
  public func snapshot() async {
    await backgroundSnapshot?.value
    let current = state
    guard current.lastSeq > lastSnapshotSeq else { return }
    lastSnapshotSeq = current.lastSeq
    Self.write(current, to: log, logger: logger)
  }

  private static func write(_ state: GatewayState, to log: EventLog, logger: Logger) {
    do {
      try log.saveSnapshot(name: SnapshotCodec.projectionName, seq: state.lastSeq, bytes: SnapshotCodec.encode(state))
    } catch {
      logger.warning("snapshot at seq \(state.lastSeq) failed: \(error)")
    }
  }
}

extension Duration {
  /// The duration in seconds as a Double.
  var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
