import Crypto
import EventLog
import Foundation
import Projections

/// Builds a deterministic sequence of gateway events: timestamps advance by a fixed step from a
/// fixed epoch, ids and request ids are counters, and secrets are sealed with a fixed fixture key.
/// The same scenario therefore yields the same records (and the same hash chain) on every run.
public struct ScenarioBuilder: Sendable {
  /// 2026-01-01T00:00:00Z in ns since the Unix epoch.
  public static let epochNs: UInt64 = 1_767_225_600_000_000_000
  /// Events collected so far, in order.
  public private(set) var events: [NewEvent] = []
  private var clockNs: UInt64
  private var counter = 0
  /// Step between consecutive events, ns (default 1 s).
  public var stepNs: UInt64 = 1_000_000_000
  /// Actor recorded on events that do not name one (default: the operator certificate's identity).
  public var actor: String = "operator:CN=openshell-operator"

  /// A builder whose first event is one ``stepNs`` after `startNs` (ns since the Unix epoch).
  public init(startNs: UInt64 = ScenarioBuilder.epochNs) {
    clockNs = startNs
  }

  /// Appends one event; returns its index in `events`.
  @discardableResult
  public mutating func emit(_ kind: GatewayEvent.OneOf_Kind, actor: String? = nil, requestID: String? = nil) -> Int {
    counter += 1
    clockNs += stepNs
    let event = GatewayEvent(kind)
    events.append(
      event.newEvent(
        actor: actor ?? self.actor, requestID: requestID ?? String(format: "req-%06d", counter), timestampNs: clockNs))
    return events.count - 1
  }

  /// Runs `body` and returns the events it emitted, as one atomic batch.
  public mutating func batch(_ body: (inout ScenarioBuilder) -> Void) -> [NewEvent] {
    let start = events.count
    body(&self)
    return Array(events[start...])
  }

  /// Advances the clock without emitting (ns).
  public mutating func wait(_ ns: UInt64) { clockNs += ns }

  /// A deterministic id such as `sbx-00000000-0000-4000-8000-000000000007`.
  public mutating func id(_ prefix: String) -> String {
    counter += 1
    return String(format: "%@-00000000-0000-4000-8000-%012d", prefix, counter)
  }

  /// Seals `value` the way the gateway does (AES-GCM, 12-byte nonce ‖ ciphertext ‖ 16-byte tag), but
  /// with a fixed fixture key and a nonce derived from `context`, so fixture bytes are reproducible.
  /// Never use this for real secrets.
  public static func sealForFixture(_ value: String, context: String) -> Data {
    let key = SymmetricKey(data: SHA256.hash(data: Data("openshell-fixture-key".utf8)))
    let nonceBytes = Array(SHA256.hash(data: Data(context.utf8))).prefix(12)
    guard let nonce = try? AES.GCM.Nonce(data: Data(nonceBytes)),
      let box = try? AES.GCM.seal(Data(value.utf8), using: key, nonce: nonce),
      let combined = box.combined
    else { return Data() }
    return combined
  }
}
