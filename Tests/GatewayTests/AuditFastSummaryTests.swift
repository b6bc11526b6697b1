import EventLog
import Foundation
import LogTools
import Projections
import SwiftProtobuf
import Testing

@testable import Gateway

/// The watch's summary written from payload bytes (``AuditFastSummary``, issue 12) is byte for byte
/// `EventSummary.describe` of the decoded event — on every record of every fixture log, on every kind it
/// renders with empty, large, negative and repeated values, and on payloads it must refuse (then the watch
/// decodes them the usual way).
@Suite struct AuditFastSummaryTests {
  /// The fast summary of `payload` for a record of `type`, or nil when it declines.
  static func fast(_ payload: [UInt8], type: String) -> String? {
    var out: [UInt8] = [0x2A]  // bytes already in the buffer stay as they are
    let ok = payload.withUnsafeBytes { AuditFastSummary.render($0, type: type, into: &out) }
    #expect(out.first == 0x2A)
    if !ok {
      #expect(out == [0x2A], "a declined payload leaves the buffer as it was")
      return nil
    }
    return String(decoding: out.dropFirst(), as: UTF8.self)
  }

  /// Every kind the fast path renders, with values that exercise each branch of its text.
  static let events: [GatewayEvent] = {
    let huge = String(repeating: "z", count: 70_000)
    return [
      GatewayEvent(
        .accessRefused(
          .with {
            $0.identity = "sandbox:sb-1"; $0.peer = "ipv4:127.0.0.1:4000"; $0.rpc = "openshell.v1.OpenShell/ListSandboxes"
            $0.code = "PERMISSION_DENIED"; $0.reason = "not available to sandbox identities"; $0.count = 17; $0.firstNs = -5; $0.lastNs = 9
          })),
      GatewayEvent(.accessRefused(.with { $0.count = UInt64.max })),
      GatewayEvent(.accessRefused(Openshell_Events_V1_AccessRefused())),
      GatewayEvent(
        .credentialsDisclosed(
          .with {
            $0.rpc = "GetSandboxProviderEnvironment"; $0.recipient = "sandbox:sb-2"; $0.sandboxID = "sb-2"; $0.providers = ["github", "", "gitlab"]
            $0.keys = ["GITHUB_TOKEN", "GITLAB_TOKEN"]
          })),
      GatewayEvent(
        .credentialsDisclosed(
          .with {
            $0.rpc = "GetProviderCredentials"; $0.recipient = "operator:CN=a"
          })),
      GatewayEvent(
        .execStarted(
          .with {
            $0.sandboxID = "sb"; $0.execID = "e1"; $0.command = ["sh", "-c", "make test -j4"]
          })),
      GatewayEvent(
        .execStarted(
          .with {
            $0.execID = "e2"; $0.tty = true; $0.command = [huge]
          })),
      GatewayEvent(
        .execStarted(
          .with {
            $0.execID = "e3"; $0.command = []
          })),
      GatewayEvent(
        .execEnded(
          .with {
            $0.sandboxID = "sb"; $0.execID = "e1"; $0.exitCode = 2; $0.durationMs = 1234
          })),
      GatewayEvent(
        .execEnded(
          .with {
            $0.execID = "e2"; $0.exitCode = -9; $0.durationMs = UInt64.max
          })),
      GatewayEvent(
        .execEnded(
          .with {
            $0.execID = "e3"; $0.exitCode = Int32.min; $0.error = "supervisor gone"
          })),
      GatewayEvent(.execEnded(Openshell_Events_V1_ExecEnded())),
      GatewayEvent(
        .supervisorConnected(
          .with {
            $0.sandboxID = "sb"; $0.sessionID = "s1"; $0.instanceID = "i1"; $0.epoch = 3; $0.peer = "ipv4:127.0.0.1:1"; $0.identity = "sandbox:sb"
            $0.certificateSha256 = "ab"; $0.connectedNs = 77
          })),
      GatewayEvent(
        .supervisorConnected(
          .with {
            $0.sandboxID = "sb"; $0.unrecordedSessions = 12
          })),
      GatewayEvent(
        .supervisorDisconnected(
          .with {
            $0.sandboxID = "sb"; $0.sessionID = "s1"; $0.durationMs = 5; $0.reason = "connection lost"
          })),
      GatewayEvent(
        .supervisorDisconnected(
          .with {
            $0.sandboxID = "sb"; $0.unrecordedSessions = 4; $0.durationMs = -3; $0.reason = "r"
          })),
      GatewayEvent(
        .supervisorDisconnected(
          .with {
            $0.sandboxID = "sb"; $0.sessionID = "s"; $0.durationMs = Int64.min
          })),
      GatewayEvent(
        .sshTunnelOpened(
          .with {
            $0.tunnelID = "t"; $0.sessionID = "s"; $0.sandboxID = "sb"; $0.target = "tcp:10.0.0.1:80"
          })),
      GatewayEvent(
        .sshTunnelClosed(
          .with {
            $0.tunnelID = "t"; $0.durationMs = 10; $0.bytesToSandbox = 1 << 40; $0.bytesFromSandbox = 3; $0.reason = "idle"
          })),
      GatewayEvent(
        .sshTunnelClosed(
          .with {
            $0.tunnelID = "t"; $0.durationMs = -1
          })),
    ]
  }()

  @Test func everyRenderedKindMatchesTheDescription() throws {
    var kinds = Set<String>()
    for var event in Self.events {
      for rpc in ["", "openshell.v1.OpenShell/ExecSandbox"] {
        event.requestRpc = rpc
        event.requestTarget = rpc.isEmpty ? "" : "sb"
        let payload: [UInt8] = try event.serializedBytes()
        let fast = try #require(Self.fast(payload, type: event.typeName), "\(event)")
        #expect(fast == EventSummary.describe(event))
        kinds.insert(event.typeName)
      }
    }
    #expect(kinds.count == 8, "each of the eight kinds is covered")
  }

  /// Every record of every fixture log (the scenario generator's records of every kind): the fast path
  /// either declines or writes exactly the description; and it declines every kind it does not render.
  @Test func fixtureLogsMatchTheDescription() throws {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let fixtures = try FileManager.default.contentsOfDirectory(atPath: repo.appendingPathComponent("Fixtures").path).sorted()
    var records = 0
    var rendered = 0
    for name in fixtures {
      let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("fast-summary-\(getpid())-\(name)")
      try? FileManager.default.removeItem(at: tmp)
      try FileManager.default.copyItem(at: repo.appendingPathComponent("Fixtures/\(name)/log"), to: tmp)
      defer { try? FileManager.default.removeItem(at: tmp) }
      let log = try EventLog.open(directory: tmp.path)
      defer { log.close() }
      try log.forEach(from: 1, through: log.headSeq) { record in
        records += 1
        let event = try GatewayEvent.decode(record)
        if let fast = Self.fast(record.payload, type: record.type) {
          rendered += 1
          #expect(fast == EventSummary.describe(event), "\(name) seq \(record.seq)")
        } else {
          #expect(AuditFastSummary.Kind.typeName(Self.field(of: event)) == nil, "\(name) seq \(record.seq) \(record.type) declined")
        }
      }
    }
    // The scenario fixtures hold lifecycle records (sandboxes, providers, policies, inference routes, gateway
    // start-up): the mutation kinds are rendered (AuditFastSummaryMutationTests cover every one), start-up
    // records and checkpoints declined.
    #expect(records > 50)
    #expect(rendered > records / 2)
  }

  /// Random values (seeded, reproducible) for every field of the eight kinds: strings of 0…40 printable ASCII
  /// characters, full-range integers, 0…4 repeated elements.
  @Test func randomEventsMatchTheDescription() throws {
    var rng = SplitMix(seed: 12)
    func text() -> String {
      String((0..<Int(rng.next() % 41)).map { _ in Character(Unicode.Scalar(UInt8(32 + rng.next() % 95))) })
    }
    func list() -> [String] { (0..<Int(rng.next() % 5)).map { _ in text() } }
    func u64() -> UInt64 { rng.next() % 4 == 0 ? 0 : rng.next() >> (rng.next() % 64) }
    func i64() -> Int64 { Int64(bitPattern: u64()) }
    for i in 0..<4_000 {
      let event: GatewayEvent
      switch i % 8 {
      case 0:
        event = GatewayEvent(
          .accessRefused(
            .with {
              $0.identity = text(); $0.peer = text(); $0.rpc = text(); $0.code = text(); $0.reason = text(); $0.count = u64()
              $0.firstNs = i64(); $0.lastNs = i64()
            }))
      case 1:
        event = GatewayEvent(
          .credentialsDisclosed(
            .with {
              $0.rpc = text(); $0.recipient = text(); $0.sandboxID = text(); $0.providers = list(); $0.keys = list()
            }))
      case 2:
        event = GatewayEvent(
          .execStarted(
            .with {
              $0.sandboxID = text(); $0.execID = text(); $0.command = list(); $0.tty = u64() % 2 == 1
            }))
      case 3:
        event = GatewayEvent(
          .execEnded(
            .with {
              $0.sandboxID = text(); $0.execID = text(); $0.exitCode = Int32(truncatingIfNeeded: i64()); $0.durationMs = u64()
              $0.error = u64() % 2 == 0 ? "" : text()
            }))
      case 4:
        event = GatewayEvent(
          .supervisorConnected(
            .with {
              $0.sandboxID = text(); $0.sessionID = text(); $0.instanceID = text(); $0.epoch = u64(); $0.peer = text(); $0.identity = text()
              $0.certificateSha256 = text(); $0.connectedNs = i64(); $0.unrecordedSessions = u64()
            }))
      case 5:
        event = GatewayEvent(
          .supervisorDisconnected(
            .with {
              $0.sandboxID = text(); $0.sessionID = u64() % 2 == 0 ? "" : text(); $0.instanceID = text(); $0.peer = text()
              $0.durationMs = i64(); $0.reason = text(); $0.unrecordedSessions = u64()
            }))
      case 6:
        event = GatewayEvent(
          .sshTunnelOpened(
            .with {
              $0.tunnelID = text(); $0.sessionID = text(); $0.sandboxID = text(); $0.target = text()
            }))
      default:
        event = GatewayEvent(
          .sshTunnelClosed(
            .with {
              $0.tunnelID = text(); $0.sessionID = text(); $0.sandboxID = text(); $0.bytesToSandbox = u64(); $0.bytesFromSandbox = u64()
              $0.durationMs = i64(); $0.reason = u64() % 2 == 0 ? "" : text()
            }))
      }
      let payload: [UInt8] = try event.serializedBytes()
      let fast = try #require(Self.fast(payload, type: event.typeName), "event \(i)")
      #expect(fast == EventSummary.describe(event), "event \(i)")
    }
  }

  /// Payloads the fast path must leave to the decoder.
  @Test func declinesWhatItDoesNotRenderExactly() throws {
    let refused = GatewayEvent(
      .accessRefused(
        .with {
          $0.rpc = "r"; $0.identity = "i"; $0.count = 2
        }))
    let bytes: [UInt8] = try refused.serializedBytes()
    #expect(Self.fast(bytes, type: "audit.access_refused") != nil)
    // The header names another type.
    #expect(Self.fast(bytes, type: "exec.started") == nil)
    // Truncated anywhere.
    for n in 0..<bytes.count { #expect(Self.fast(Array(bytes.prefix(n)), type: "audit.access_refused") == nil, "prefix \(n)") }
    // Two kinds (swift-protobuf would merge or replace them).
    let started: [UInt8] = try GatewayEvent(.execStarted(.with { $0.execID = "e" })).serializedBytes()
    #expect(Self.fast(bytes + started, type: "audit.access_refused") == nil)
    #expect(Self.fast(bytes + bytes, type: "audit.access_refused") == nil)
    // A kind it does not render.
    let initialized: [UInt8] = try GatewayEvent(.gatewayInitialized(.with { $0.gatewayName = "g" })).serializedBytes()
    #expect(Self.fast(initialized, type: "gateway.initialized") == nil)
    // Non-ASCII text (left to the decoder, which checks UTF-8).
    let unicode: [UInt8] = try GatewayEvent(.accessRefused(.with { $0.reason = "ünïcode" })).serializedBytes()
    #expect(Self.fast(unicode, type: "audit.access_refused") == nil)
    // A string field sent as a varint.
    var inner = WireBytes()
    inner.tag(3, 0)
    inner.varint(5)
    var outer = WireBytes()
    outer.tag(91, 2)
    outer.varint(UInt64(inner.bytes.count))
    outer.bytes += inner.bytes
    #expect(Self.fast(outer.bytes, type: "audit.access_refused") == nil)
    // Not ASCII but valid UTF-8, in a field that is not rendered either.
    let peer: [UInt8] = try GatewayEvent(.accessRefused(.with { $0.peer = "ø" })).serializedBytes()
    #expect(Self.fast(peer, type: "audit.access_refused") == nil)
  }

  /// Unknown fields (a newer writer's) are skipped as swift-protobuf keeps them aside; a repeated singular
  /// field keeps its last value, as swift-protobuf does.
  @Test func unknownFieldsAndRepeatsDecodeAsSwiftProtobuf() throws {
    var inner = WireBytes()
    inner.string(3, "first")
    inner.tag(14, 0)
    inner.varint(99)
    inner.tag(13, 1)
    inner.bytes += [UInt8](repeating: 7, count: 8)
    inner.tag(12, 5)
    inner.bytes += [1, 2, 3, 4]
    inner.string(15, "unknown")
    inner.string(3, "second")
    inner.tag(6, 0)
    inner.varint(1)
    inner.tag(6, 0)
    inner.varint(300)
    var outer = WireBytes()
    outer.string(1000, "rpc")
    outer.tag(91, 2)
    outer.varint(UInt64(inner.bytes.count))
    outer.bytes += inner.bytes
    let event = try GatewayEvent(serializedBytes: outer.bytes)
    let fast = try #require(Self.fast(outer.bytes, type: "audit.access_refused"))
    #expect(fast == EventSummary.describe(event))
    #expect(fast.hasPrefix("refused 300× second for"))
  }

  /// A ten-byte varint carries at most 64 bits: a tenth byte above 1 is refused (swift-protobuf refuses it
  /// too), so the fast path never renders a value the decoder would not accept.
  @Test func overlongVarintIsRefused() {
    let max: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
    let over: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]
    #expect(
      max.withUnsafeBytes { b in
        var s = WireScanner(b); return s.varint()
      } == UInt64.max)
    #expect(
      over.withUnsafeBytes { b in
        var s = WireScanner(b); return s.varint()
      } == nil)
  }

  /// The oneof field number of `event`'s kind (by encoding it).
  static func field(of event: GatewayEvent) -> Int {
    var e = event
    e.requestRpc = ""
    e.requestTarget = ""
    let bytes: [UInt8] = (try? e.serializedBytes()) ?? []
    return bytes.withUnsafeBytes { b in
      var s = WireScanner(b)
      return s.tag()?.field ?? 0
    }
  }
}

/// A small seeded generator (SplitMix64): the same values on every run.
struct SplitMix {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// Hand-written protobuf wire bytes for the tests.
struct WireBytes {
  var bytes: [UInt8] = []
  mutating func varint(_ v: UInt64) {
    var v = v
    while v >= 0x80 {
      bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
      v >>= 7
    }
    bytes.append(UInt8(v))
  }
  mutating func tag(_ field: Int, _ wire: Int) { varint(UInt64(field << 3 | wire)) }
  mutating func string(_ field: Int, _ s: String) {
    tag(field, 2)
    varint(UInt64(s.utf8.count))
    bytes += Array(s.utf8)
  }
}
