import Foundation
import LogTools
import Projections
import SwiftProtobuf
import Testing

@testable import Gateway

/// The payload-bytes summary (``AuditFastSummary``) of the mutation kinds — sandbox lifecycle, workspaces,
/// templates, certificates, services, providers, policies, settings, inference, SSH sessions, credential
/// substitutions — is byte for byte `EventSummary.describe`: on hand-picked edge values (empty strings and
/// maps, maximal and negative integers, keys that sort by prefix), on seeded random events of every kind,
/// and it declines what it cannot render exactly (a repeated map key, a carriage return in a prefixed hash).
@Suite struct AuditFastSummaryMutationTests {
  static func fast(_ payload: [UInt8], type: String) -> String? { AuditFastSummaryTests.fast(payload, type: type) }

  /// Renders `event` serialized as swift-protobuf writes it (maps in hash order, not sorted) with and
  /// without the request fields, and compares with the description.
  static func expectSame(_ event: GatewayEvent, _ note: String = "", sourceLocation: SourceLocation = #_sourceLocation) throws {
    for rpc in ["", "openshell.v1.OpenShell/CreateSandbox"] {
      var e = event
      e.requestRpc = rpc
      e.requestTarget = rpc.isEmpty ? "" : "default/x"
      for deterministic in [false, true] {
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = deterministic
        let payload: [UInt8] = try e.serializedBytes(options: options)
        let rendered = try #require(fast(payload, type: e.typeName), "\(note) \(e)", sourceLocation: sourceLocation)
        #expect(rendered == EventSummary.describe(e), "\(note)", sourceLocation: sourceLocation)
      }
    }
  }

  @Test func everyMutationKindMatchesTheDescription() throws {
    var kinds = Set<String>()
    for event in Self.events {
      try Self.expectSame(event)
      kinds.insert(event.typeName)
    }
    #expect(kinds.count == 39, "each of the 39 mutation kinds rendered is covered")
  }

  /// An inference route's timeout reads as `openshell inference get` shows it: an unset one (0) is the
  /// gateway's default, "60s (default)", never "0s"; in both renderers.
  @Test func inferenceRouteTimeoutReadsAsTheCLI() throws {
    let cases: [(UInt32, Bool, String)] = [
      (0, true, "route inference.local → anthropic model m timeout 60s (default)"),
      (0, false, "route inference.local → anthropic model m timeout 60s (default) (not verified)"),
      (30, true, "route inference.local → anthropic model m timeout 30s"),
      (60, false, "route inference.local → anthropic model m timeout 60s (not verified)"),
    ]
    for (timeout, verified, text) in cases {
      let event = GatewayEvent(
        .inferenceRouteSet(
          .with {
            $0.route = "inference.local"; $0.provider = "anthropic"; $0.model = "m"; $0.timeoutSeconds = timeout; $0.verified = verified
          }))
      #expect(EventSummary.describe(event) == text)
      #expect(Self.fast(try event.serializedBytes(), type: event.typeName) == text)
      try Self.expectSame(event, "timeout \(timeout)")
    }
  }

  /// A refusal window's samples: several addresses, a claimed subject and distinct subjects, at and below
  /// the counting cap; an identity from before the sample existed (`unverified:<subject>`) is declined.
  @Test func refusalSamplesMatchTheDescription() throws {
    for peers: UInt64 in [0, 1, 2, 1023, 1024, UInt64.max] {
      for subjects: UInt64 in [0, 2, 1024] {
        for claimed in ["", "CN=evil\\n", "CN=a \"quoted\""] {
          try Self.expectSame(
            GatewayEvent(
              .accessRefused(
                .with {
                  $0.identity = "unverified"; $0.peer = "ipv4:10.0.0.1:1"; $0.rpc = "tls-handshake"; $0.code = "UNAUTHENTICATED"
                  $0.reason = "certificate verify failed"; $0.count = 201; $0.claimedSubject = claimed; $0.distinctSubjects = subjects
                  $0.distinctPeers = peers
                })), "peers \(peers) subjects \(subjects)")
        }
      }
    }
    let old: [UInt8] = try GatewayEvent(
      .accessRefused(
        .with {
          $0.identity = "unverified:CN=x"; $0.count = 1
        })
    ).serializedBytes()
    #expect(Self.fast(old, type: "audit.access_refused") == nil)
  }

  /// Payloads of mutation kinds the fast path must leave to the decoder.
  @Test func declinesWhatItCannotRenderExactly() throws {
    // A map with one key twice (swift-protobuf keeps the last value).
    var entry = WireBytes()
    entry.string(1, "team")
    entry.string(2, "ml")
    var body = WireBytes()
    body.string(2, "research")
    for _ in 0..<2 { body.message(3, entry.bytes) }
    var outer = WireBytes()
    outer.message(10, body.bytes)
    #expect(try GatewayEvent(serializedBytes: outer.bytes).workspaceCreated.labels == ["team": "ml"])
    #expect(Self.fast(outer.bytes, type: "workspace.created") == nil)
    // The same map once is rendered.
    var once = WireBytes()
    once.string(2, "research")
    once.message(3, entry.bytes)
    var single = WireBytes()
    single.message(10, once.bytes)
    #expect(Self.fast(single.bytes, type: "workspace.created") == "workspace research labels team=ml")
    // A carriage return in a hash whose prefix is printed ("\r\n" is one Character).
    let crlf: [UInt8] = try GatewayEvent(
      .policyRevisionSubmitted(
        .with {
          $0.version = 1; $0.contentSha256 = "0123456789a\r\nbcdef"
        })
    ).serializedBytes()
    #expect(Self.fast(crlf, type: "policy.revision_submitted") == nil)
    // Non-ASCII in a field that is not printed (a map value, a sealed key, an unrendered id).
    let labels: [UInt8] = try GatewayEvent(.sandboxRequested(.with { $0.annotations = ["a": "ü"] })).serializedBytes()
    #expect(Self.fast(labels, type: "sandbox.requested") == nil)
    let sealed: [UInt8] = try GatewayEvent(.providerCredentialRotated(.with { $0.credential.key = "ключ" })).serializedBytes()
    #expect(Self.fast(sealed, type: "provider.credential_rotated") == nil)
    let ready: [UInt8] = try GatewayEvent(.sandboxReady(.with { $0.hostKeyFingerprint = "é" })).serializedBytes()
    #expect(Self.fast(ready, type: "sandbox.ready") == nil)
    // A singular message field twice (swift-protobuf merges them).
    let rotated: [UInt8] = try GatewayEvent(.providerCredentialRotated(.with { $0.credential.key = "A" })).serializedBytes()
    #expect(Self.fast(rotated, type: "provider.credential_rotated") == "credential A rotated (value sealed)")
    var twice = WireBytes()
    twice.message(2, [0x0A, 0x01, 0x41])
    twice.message(2, [0x0A, 0x01, 0x42])
    var wrapped = WireBytes()
    wrapped.message(42, twice.bytes)
    #expect(Self.fast(wrapped.bytes, type: "provider.credential_rotated") == nil)
    // Truncated anywhere, and the header naming another type.
    let requested: [UInt8] = try Self.events[5].serializedBytes()
    #expect(Self.fast(requested, type: "sandbox.requested") != nil)
    #expect(Self.fast(requested, type: "sandbox.ready") == nil)
    for n in 0..<requested.count { #expect(Self.fast(Array(requested.prefix(n)), type: "sandbox.requested") == nil, "prefix \(n)") }
    // Kinds left to the decoder: gateway start-up, restore, checkpoints.
    for event in [
      GatewayEvent(.gatewayInitialized(.with { $0.gatewayName = "g" })), GatewayEvent(.gatewayConfigured(.with { $0.port = 1 })),
      GatewayEvent(.gatewayRestored(.with { $0.gatewayName = "g" })), GatewayEvent(.auditCheckpoint(.with { $0.coversSeq = 1 })),
    ] {
      #expect(Self.fast(try event.serializedBytes(), type: event.typeName) == nil, "\(event.typeName)")
    }
  }
}

extension WireBytes {
  /// A length-delimited field holding `b` (a sub-message or a map entry).
  mutating func message(_ field: Int, _ b: [UInt8]) {
    tag(field, 2)
    varint(UInt64(b.count))
    bytes += b
  }
}
