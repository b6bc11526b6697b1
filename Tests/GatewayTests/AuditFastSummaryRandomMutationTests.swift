import Foundation
import LogTools
import Projections
import SwiftProtobuf
import Testing

@testable import Gateway

/// Seeded random values (reproducible) for every field of every mutation kind ``AuditFastSummary`` renders:
/// strings of 0…40 printable ASCII characters, full-range integers, 0…4 repeated elements and map entries
/// (keys from a small alphabet so that prefixes and near-equal keys occur); the summary written from the
/// payload bytes is the description, byte for byte.
@Suite struct AuditFastSummaryRandomMutationTests {
  @Test func randomMutationsMatchTheDescription() throws {
    var rng = SplitMix(seed: 2026)
    func text() -> String {
      String((0..<Int(rng.next() % 41)).map { _ in Character(Unicode.Scalar(UInt8(32 + rng.next() % 95))) })
    }
    func key() -> String { String((0..<Int(rng.next() % 4)).map { _ in "aAb-"[String.Index(utf16Offset: Int(rng.next() % 4), in: "aAb-")] }) }
    func list() -> [String] { (0..<Int(rng.next() % 5)).map { _ in text() } }
    func map() -> [String: String] {
      var m: [String: String] = [:]
      for _ in 0..<Int(rng.next() % 5) { m[key()] = text() }
      return m
    }
    func data() -> Data { Data((0..<Int(rng.next() % 9)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }) }
    func u64() -> UInt64 { rng.next() % 4 == 0 ? 0 : rng.next() >> (rng.next() % 64) }
    func i64() -> Int64 { Int64(bitPattern: u64()) }
    func u32() -> UInt32 { UInt32(truncatingIfNeeded: u64()) }
    func i32() -> Int32 { Int32(truncatingIfNeeded: u64()) }
    func sealed() -> [Openshell_Events_V1_SealedValue] {
      (0..<Int(rng.next() % 4)).map { _ in
        .with {
          $0.key = key(); $0.sealed = data()
        }
      }
    }
    let kinds = 40
    var covered = Set<String>()
    for i in 0..<8_000 {
      let kind: GatewayEvent.OneOf_Kind
      switch i % kinds {
      case 0:
        kind = .workspaceCreated(
          .with {
            $0.id = text(); $0.name = text(); $0.labels = map()
          })
      case 1:
        kind = .workspaceDeleted(
          .with {
            $0.id = text(); $0.name = text()
          })
      case 2:
        kind = .sandboxTemplateCreated(
          .with {
            $0.id = text(); $0.name = text(); $0.workspace = text(); $0.labels = map(); $0.annotations = map(); $0.spec = data()
          })
      case 3:
        kind = .sandboxTemplateDeleted(
          .with {
            $0.id = text(); $0.name = text(); $0.workspace = text()
          })
      case 4:
        kind = .sandboxRequested(
          .with {
            $0.id = text(); $0.name = text(); $0.workspace = text(); $0.labels = map(); $0.annotations = map(); $0.spec = data()
            $0.templateName = u64() % 2 == 0 ? "" : text(); $0.templateVersion = u64(); $0.providers = list(); $0.envKeyID = text()
            $0.sealedEnvironment = map().mapValues { _ in data() }; $0.sealedTemplateEnvironment = map().mapValues { _ in data() }
            $0.serviceExposures = (0..<Int(rng.next() % 3)).map { _ in
              .with {
                $0.service = text(); $0.targetPort = u32(); $0.authorizationMode = i32()
              }
            }
          })
      case 5:
        kind = .sandboxProvisioning(
          .with {
            $0.id = text(); $0.driver = text(); $0.message = u64() % 2 == 0 ? "" : text()
          })
      case 6:
        kind = .sandboxReady(
          .with {
            $0.id = text(); $0.hostKeyFingerprint = text(); $0.mainProcessStartedNs = i64()
          })
      case 7:
        kind = .sandboxFailed(
          .with {
            $0.id = text(); $0.reason = text(); $0.message = text()
          })
      case 8:
        kind = .sandboxStopping(
          .with {
            $0.id = text(); $0.reason = u64() % 2 == 0 ? "" : text()
          })
      case 9: kind = .sandboxStopped(.with { $0.id = text() })
      case 10: kind = .sandboxStarting(.with { $0.id = text() })
      case 11: kind = .sandboxDeleting(.with { $0.id = text() })
      case 12: kind = .sandboxDeleted(.with { $0.id = text() })
      case 13:
        kind = .sandboxMainProcessExited(
          .with {
            $0.id = text(); $0.exitCode = i32(); $0.signal = u64() % 2 == 0 ? 0 : i32()
          })
      case 14:
        kind = .sandboxConditionSet(
          .with {
            $0.id = text(); $0.type = text(); $0.status = text(); $0.reason = text(); $0.message = text()
          })
      case 15:
        kind = .sandboxNetworkDenials(
          .with {
            $0.id = text(); $0.firstSeenNs = i64(); $0.lastSeenNs = i64()
            $0.denials = (0..<Int(rng.next() % 4)).map { _ in
              .with {
                $0.host = text(); $0.port = u32(); $0.binary = u64() % 2 == 0 ? "" : text(); $0.binarySha256 = text(); $0.reason = text(); $0.count = u32()
              }
            }
          })
      case 16:
        kind = .providerCreated(
          .with {
            $0.id = text(); $0.name = text(); $0.workspace = text(); $0.type = text(); $0.config = map(); $0.credentials = sealed(); $0.dataKeyID = text()
          })
      case 17:
        kind = .providerUpdated(
          .with {
            $0.id = text(); $0.setConfig = map(); $0.removedConfig = list(); $0.setCredentials = sealed(); $0.removedCredentials = list()
          })
      case 18:
        kind = .providerCredentialRotated(
          .with {
            $0.id = text();
            if u64() % 4 != 0 {
              $0.credential = .with {
                $0.key = text(); $0.sealed = data()
              }
            }
          })
      case 19:
        kind = .providerDeleted(
          .with {
            $0.id = text(); $0.name = text(); $0.workspace = text()
          })
      case 20:
        kind = .sandboxProviderAttached(
          .with {
            $0.sandboxID = text(); $0.provider = text()
          })
      case 21:
        kind = .sandboxProviderDetached(
          .with {
            $0.sandboxID = text(); $0.provider = text()
          })
      case 22:
        kind = .policyRevisionSubmitted(
          .with {
            $0.sandboxID = text(); $0.version = u32(); $0.contentSha256 = text(); $0.policy = data()
          })
      case 23:
        kind = .policyRevisionLoaded(
          .with {
            $0.sandboxID = text(); $0.version = u32()
          })
      case 24:
        kind = .policyRevisionFailed(
          .with {
            $0.sandboxID = text(); $0.version = u32(); $0.message = text()
          })
      case 25:
        kind = .policyRevisionSuperseded(
          .with {
            $0.sandboxID = text(); $0.version = u32(); $0.supersededBy = u32()
          })
      case 26:
        kind = .globalPolicySet(
          .with {
            $0.version = u32(); $0.contentSha256 = text(); $0.policy = data()
          })
      case 27: kind = .globalPolicyDeleted(.with { $0.version = u32() })
      case 28:
        kind = .settingSet(
          .with {
            $0.scope = text(); $0.key = text(); $0.value = text()
          })
      case 29:
        kind = .settingDeleted(
          .with {
            $0.scope = text(); $0.key = text()
          })
      case 30:
        kind = .inferenceRouteSet(
          .with {
            $0.route = text(); $0.provider = text(); $0.model = text(); $0.timeoutSeconds = u32(); $0.verified = u64() % 2 == 0
          })
      case 31: kind = .inferenceRouteDeleted(.with { $0.route = text() })
      case 32:
        kind = .inferenceBundlePublished(
          .with {
            $0.revision = text(); $0.routes = list()
          })
      case 33:
        kind = .sshSessionCreated(
          .with {
            $0.id = text(); $0.sandboxID = text(); $0.tokenSha256 = text(); $0.expiresNs = u64() % 3 == 0 ? 0 : i64()
            $0.hostKeyFingerprint = text()
          })
      case 34: kind = .sshSessionRevoked(.with { $0.id = text() })
      case 35:
        kind = .certificateIssued(
          .with {
            $0.role = text(); $0.subject = text(); $0.fingerprintSha256 = text(); $0.serialHex = text(); $0.notBeforeNs = i64(); $0.notAfterNs = i64()
            $0.subjectAltNames = list(); $0.sandboxID = text(); $0.replacesFingerprint = text()
          })
      case 36:
        kind = .serviceExposed(
          .with {
            $0.sandboxID = text(); $0.service = u64() % 2 == 0 ? "" : text(); $0.targetPort = u32(); $0.authorizationMode = i32() % 4
          })
      case 37:
        kind = .serviceDeleted(
          .with {
            $0.sandboxID = text(); $0.service = u64() % 2 == 0 ? "" : text()
          })
      case 38:
        kind = .credentialsSubstituted(
          .with {
            $0.sandboxID = text(); $0.firstSeenNs = i64(); $0.lastSeenNs = i64()
            $0.substitutions = (0..<Int(rng.next() % 4)).map { _ in
              .with {
                $0.key = text(); $0.provider = u64() % 2 == 0 ? "" : text(); $0.host = u64() % 2 == 0 ? "" : text(); $0.port = u32()
                $0.binary = u64() % 2 == 0 ? "" : text(); $0.count = u32()
              }
            }
          })
      default:
        kind = .accessRefused(
          .with {
            $0.identity = text(); $0.peer = text(); $0.rpc = text(); $0.code = text(); $0.reason = text(); $0.count = u64(); $0.firstNs = i64()
            $0.lastNs = i64(); $0.claimedSubject = u64() % 2 == 0 ? "" : text(); $0.distinctSubjects = u64() % 2048; $0.distinctPeers = u64() % 2048
          })
      }
      let event = GatewayEvent(kind)
      // The text generator never starts an identity with "unverified:" (a string of ≥ 11 characters
      // chosen from 95 has that prefix with probability 95^-11).
      let payload: [UInt8] = try event.serializedBytes()
      let fast = try #require(AuditFastSummaryTests.fast(payload, type: event.typeName), "event \(i) \(event.typeName)")
      #expect(fast == EventSummary.describe(event), "event \(i)")
      covered.insert(event.typeName)
    }
    #expect(covered.count == kinds)
  }
}
