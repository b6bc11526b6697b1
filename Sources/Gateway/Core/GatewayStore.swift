import EventLog
import Foundation
import GRPCCore
import LogTools
import Logging
import Projections

/// What a command decided: the events to append (in order, atomically), the names it claims while
/// its append is in flight, and optimistic-concurrency expectations per aggregate.
struct Decision: Sendable {
  var events: [GatewayEvent]
  /// Keys such as `sandbox/default/happy-otter`; a second in-flight command claiming the same key
  /// fails with ALREADY_EXISTS instead of racing (two concurrent creates: exactly one wins).
  var claims: [String] = []
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
public actor GatewayStore {
  /// The gateway's event log.
  public nonisolated let log: EventLog
  /// The projection: every record up to `state.lastSeq` applied.
  public private(set) var state: GatewayState
  private var claims: Set<String> = []
  private var lastSnapshotSeq: UInt64
  /// A snapshot is written every this many records (and at shutdown).
  public let snapshotInterval: UInt64
  private let logger = Logger(label: "openshell.gateway.store")
  private let metrics: GatewayMetrics?
  /// What start-up had to work around (e.g. a damaged snapshot it fell back from); also logged as warnings.
  public nonisolated let startupWarnings: [String]

  /// Opens the projection: newest snapshot plus the tail of the log.
  /// - Throws: `EventLogError`, `ProjectionError`.
  public init(log: EventLog, snapshotInterval: UInt64 = 1000, metrics: GatewayMetrics? = nil) throws {
    self.log = log
    let loaded = try StateLoader.load(log)
    state = loaded.state
    lastSnapshotSeq = loaded.snapshotSeq
    self.snapshotInterval = snapshotInterval
    self.metrics = metrics
    startupWarnings = loaded.warnings
    for w in loaded.warnings { Logger(label: "openshell.gateway.store").warning("\(w)") }
  }

  /// Decides and appends a command. `decide` runs on the current state and throws the RPC error
  /// to return when the command is invalid; nothing is appended then.
  /// - Returns: the state after the command's records were applied, and the seqs appended.
  @discardableResult
  func execute(actor: String, requestID: String, _ decide: @Sendable (GatewayState) throws -> Decision) async throws -> (state: GatewayState, seqs: ClosedRange<UInt64>?, decision: Decision) {
    // A retried request (same request id) does not act twice: it returns the object it acted on.
    if !requestID.isEmpty, let seq = state.requests[requestID], let prior = try? log.record(at: seq) {
      return (state, nil, Decision(events: [], target: prior.aggregate.id, noop: true))
    }
    var decision = try decide(state)
    guard !decision.events.isEmpty else { return (state, nil, decision) }
    if !requestID.isEmpty { decision.claims.append("request/\(requestID)") }
    for claim in decision.claims where claims.contains(claim) {
      throw RPCErrors.alreadyExists(claim.split(separator: "/").dropFirst().joined(separator: "/"))
    }
    claims.formUnion(decision.claims)
    defer { claims.subtract(decision.claims) }
    let rid = requestID.isEmpty ? RandomID.uuid() : requestID
    let events = decision.events.map { $0.newEvent(actor: actor, requestID: rid) }
    let started = ContinuousClock.now
    let range: ClosedRange<UInt64>
    do {
      range = try await log.append(events, expecting: decision.expecting)
    } catch let e as EventLogError {
      throw RPCErrors.from(e)
    }
    metrics?.recordAppend(seconds: (ContinuousClock.now - started).seconds)
    try catchUp()
    return (state, range, decision)
  }

  /// Appends events decided by a reactor (actor `system` unless given), e.g. driver outcomes.
  @discardableResult
  public func record(_ events: [GatewayEvent], actor: String = "system", requestID: String = "") async throws -> GatewayState {
    try await execute(actor: actor, requestID: requestID) { _ in Decision(events: events) }.state
  }

  /// Applies every record the log has beyond `state.lastSeq`; writes a snapshot when due.
  public func catchUp() throws {
    let head = log.headSeq
    guard head > state.lastSeq else { return }
    do {
      try StateLoader.replay(log, into: &state, through: .head)
    } catch let e as EventLogError {
      throw RPCErrors.from(e)
    }
    metrics?.setHeadSeq(state.lastSeq)
    if state.lastSeq - lastSnapshotSeq >= snapshotInterval { snapshot() }
  }

  /// Writes a snapshot of the current state (errors are logged; the log stays the source of truth).
  public func snapshot() {
    guard state.lastSeq > lastSnapshotSeq else { return }
    do {
      try log.saveSnapshot(name: SnapshotCodec.projectionName, seq: state.lastSeq, bytes: SnapshotCodec.encode(state))
      lastSnapshotSeq = state.lastSeq
    } catch {
      logger.warning("snapshot at seq \(state.lastSeq) failed: \(error)")
    }
  }
}

extension Duration {
  /// The duration in seconds as a Double.
  var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
