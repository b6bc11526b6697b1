import Foundation
import Testing

@testable import EventLog

/// A fresh temporary directory per test, removed by `remove()`.
struct TempDir {
  let path: String

  init(_ label: String = "eventlog") {
    path = FileManager.default.temporaryDirectory.path + "/\(label)-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }

  /// The log directory inside this temp dir.
  var log: String { path + "/log" }

  func remove() { try? FileManager.default.removeItem(atPath: path) }
}

func event(
  _ type: String = "thing.happened", kind: String = "thing", id: String = "a", actor: String = "tester",
  request: String = "req", payload: String = "payload", ts: UInt64? = nil, version: UInt16 = 1
) -> NewEvent {
  NewEvent(
    type: type, aggregate: AggregateRef(kind: kind, id: id), actor: actor, requestID: request,
    payloadVersion: version, payload: Array(payload.utf8), timestampNs: ts)
}

/// Deterministic pseudo-random bytes (xorshift64*), incompressible.
func noise(_ count: Int, seed: UInt64) -> [UInt8] {
  var x = seed | 1
  var out = [UInt8]()
  out.reserveCapacity(count)
  while out.count < count {
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    let v = x &* 0x2545_F491_4F6C_DD1D
    for i in 0..<8 where out.count < count { out.append(UInt8(truncatingIfNeeded: v >> (UInt64(i) * 8))) }
  }
  return out
}

/// Repetitive JSON-like payload: good for dictionaries.
func jsonPayload(_ i: Int) -> [UInt8] {
  let phases = ["Provisioning", "Ready", "Error", "Deleting"]
  let s = """
    {"sandbox":{"id":"sbx-\(String(i * 7919, radix: 16))","name":"agent-\(i % 37)","phase":"\(phases[i % 4])",\
    "image":"ghcr.io/openshell/sandbox:0.1.\(i % 5)","policy":{"network":"restricted","filesystem":"read-write",\
    "processes":["python3","bash"]},"labels":{"team":"infra","owner":"user-\(i % 11)"},"resources":{"cpu":\(i % 4 + 1),\
    "memoryMiB":\(512 * (i % 8 + 1))}}}
    """
  return Array(s.utf8)
}

func openLog(_ dir: String, _ configure: (inout EventLog.Options) -> Void = { _ in }) throws -> EventLog {
  var o = EventLog.Options()
  // Tests provoke corruption and full disks on purpose; keep their operational log lines quiet.
  o.logger.logLevel = .critical
  configure(&o)
  return try EventLog.open(directory: dir, options: o)
}

/// Runs `body` with the thrown EventLogError, recording an issue if nothing (or something else) was thrown.
func expectEventLogError(
  _ code: EventLogError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> EventLogError? {
  do {
    try body()
    Issue.record("expected EventLogError.\(code), nothing was thrown", sourceLocation: sourceLocation)
  } catch let e as EventLogError {
    #expect(e.code == code, "\(e)", sourceLocation: sourceLocation)
    return e
  } catch {
    Issue.record("expected EventLogError.\(code), got \(error)", sourceLocation: sourceLocation)
  }
  return nil
}
