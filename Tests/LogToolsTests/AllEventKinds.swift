import EventLog
import Foundation
import Projections
import SwiftProtobuf

/// One event of every `GatewayEvent` kind with realistic values (for mapping tests that must cover each
/// kind: OCSF). `canary` is put where a secret could be: sealed credential values and a token hash.
/// Each entry is (actor, event).
enum AllEventKinds {
  static let sandbox = "0b1c2d3e-0000-4000-8000-000000000001"
  static let operatorActor = "operator:CN=openshell-operator/sha256:" + String(repeating: "ab", count: 32)

  static func events(canary: String) -> [(String, GatewayEvent)] {
    let sealed = Data("nonce+\(canary)+tag".utf8)
    let op = operatorActor
    let sb = "sandbox:\(sandbox)"
    let list: [(String, GatewayEvent.OneOf_Kind)] = [
      (
        "system",
        .gatewayInitialized(
          .with {
            $0.gatewayName = "gw"; $0.gatewayID = "gw-1"; $0.serverVersion = "0.1.5"
          })
      ),
      (
        "system",
        .gatewayConfigured(
          .with {
            $0.port = 8080; $0.authMode = "mtls"; $0.registryUsername = "bot"; $0.registryTokenSha256 = "00"
          })
      ),
      (
        "system",
        .certificateIssued(
          .with {
            $0.role = "operator"; $0.subject = "CN=openshell-operator"; $0.fingerprintSha256 = "ab"
          })
      ),
      (
        op,
        .workspaceCreated(
          .with {
            $0.id = "w1"; $0.name = "team"; $0.labels = ["env": "dev"]
          })
      ),
      (
        op,
        .sandboxTemplateCreated(
          .with {
            $0.id = "t1"; $0.name = "tpl"; $0.workspace = "team"
          })
      ),
      (
        op,
        .sandboxRequested(
          .with {
            $0.id = sandbox; $0.name = "box"; $0.workspace = "default"; $0.providers = ["gh"]
          })
      ),
      (
        "system",
        .sandboxProvisioning(
          .with {
            $0.id = sandbox; $0.driver = "local"
          })
      ),
      ("system", .sandboxReady(.with { $0.id = sandbox })),
      (
        "system",
        .sandboxConditionSet(
          .with {
            $0.id = sandbox; $0.type = "Ready"; $0.status = "True"; $0.reason = "Started"
          })
      ),
      (
        sb,
        .sandboxNetworkDenials(
          .with {
            $0.id = sandbox
            $0.firstSeenNs = 1_700_000_000_000_000_000
            $0.lastSeenNs = 1_700_000_005_000_000_000
            $0.denials = [
              .with {
                $0.host = "evil.example"; $0.port = 443; $0.binary = "/usr/bin/curl"; $0.binarySha256 = "cd"; $0.reason = "no policy allows it"; $0.count = 7
              },
              .with {
                $0.host = "169.254.169.254"; $0.port = 80; $0.reason = "metadata address"; $0.count = 1
              },
            ]
          })
      ),
      (
        sb,
        .credentialsSubstituted(
          .with {
            $0.sandboxID = sandbox
            $0.firstSeenNs = 1_700_000_000_000_000_000
            $0.lastSeenNs = 1_700_000_004_000_000_000
            $0.substitutions = [
              .with {
                $0.key = "GITHUB_TOKEN"; $0.provider = "gh"; $0.host = "api.github.com"; $0.port = 443; $0.binary = "/usr/bin/git"; $0.count = 5
              },
              .with {
                $0.key = "GITHUB_TOKEN"; $0.provider = "gh"; $0.count = 2
              },
            ]
          })
      ),
      (
        op,
        .providerCreated(
          .with {
            $0.id = "p1"; $0.name = "gh"; $0.workspace = "default"; $0.type = "github";
            $0.credentials = [
              .with {
                $0.key = "GITHUB_TOKEN"; $0.sealed = sealed
              }
            ]
          })
      ),
      (
        op,
        .providerUpdated(
          .with {
            $0.id = "p1";
            $0.setCredentials = [
              .with {
                $0.key = "GITHUB_TOKEN"; $0.sealed = sealed
              }
            ]; $0.removedConfig = ["x"]
          })
      ),
      (
        op,
        .providerCredentialRotated(
          .with {
            $0.id = "p1";
            $0.credential = .with {
              $0.key = "GITHUB_TOKEN"; $0.sealed = sealed
            }
          })
      ),
      (
        op,
        .sandboxProviderAttached(
          .with {
            $0.sandboxID = sandbox; $0.provider = "gh"
          })
      ),
      (
        op,
        .sandboxProviderDetached(
          .with {
            $0.sandboxID = sandbox; $0.provider = "gh"
          })
      ),
      (
        op,
        .policyRevisionSubmitted(
          .with {
            $0.sandboxID = sandbox; $0.version = 2; $0.contentSha256 = "ef"
          })
      ),
      (
        "system",
        .policyRevisionLoaded(
          .with {
            $0.sandboxID = sandbox; $0.version = 2
          })
      ),
      (
        "system",
        .policyRevisionFailed(
          .with {
            $0.sandboxID = sandbox; $0.version = 3; $0.message = "bad"
          })
      ),
      (
        "system",
        .policyRevisionSuperseded(
          .with {
            $0.sandboxID = sandbox; $0.version = 2; $0.supersededBy = 3
          })
      ),
      (
        op,
        .globalPolicySet(
          .with {
            $0.version = 1; $0.contentSha256 = "01"
          })
      ),
      (op, .globalPolicyDeleted(.with { $0.version = 1 })),
      (
        op,
        .settingSet(
          .with {
            $0.scope = "global"; $0.key = "log_level"; $0.value = "debug"
          })
      ),
      (
        op,
        .settingDeleted(
          .with {
            $0.scope = "global"; $0.key = "log_level"
          })
      ),
      (
        op,
        .inferenceRouteSet(
          .with {
            $0.route = "inference.local"; $0.provider = "gh"; $0.model = "m"; $0.timeoutSeconds = 30
          })
      ),
      (
        "system",
        .inferenceBundlePublished(
          .with {
            $0.revision = "r1"; $0.routes = ["inference.local"]
          })
      ),
      (op, .inferenceRouteDeleted(.with { $0.route = "inference.local" })),
      (
        op,
        .sshSessionCreated(
          .with {
            $0.id = "s1"; $0.sandboxID = sandbox; $0.tokenSha256 = "12"; $0.expiresNs = 1_800_000_000_000_000_000; $0.hostKeyFingerprint = "SHA256:x"
          })
      ),
      (
        op,
        .sshTunnelOpened(
          .with {
            $0.tunnelID = "tn1"; $0.sessionID = "s1"; $0.sandboxID = sandbox; $0.target = "ssh"
          })
      ),
      (
        op,
        .sshTunnelClosed(
          .with {
            $0.tunnelID = "tn1"; $0.sessionID = "s1"; $0.sandboxID = sandbox; $0.bytesToSandbox = 10; $0.bytesFromSandbox = 20; $0.durationMs = 5
          })
      ),
      (op, .sshSessionRevoked(.with { $0.id = "s1" })),
      (
        "anonymous",
        .accessRefused(
          .with {
            $0.identity = "anonymous"; $0.peer = "ipv4:127.0.0.1:50123"; $0.rpc = "openshell.v1.OpenShell/ListSandboxes"
            $0.code = "UNAUTHENTICATED"; $0.reason = "no client certificate"; $0.count = 1000; $0.firstNs = 1_700_000_000_000_000_000;
            $0.lastNs = 1_700_000_009_000_000_000
          })
      ),
      (
        sb,
        .accessRefused(
          .with {
            $0.identity = sb; $0.peer = "ipv6:[::1]:50124"; $0.rpc = "openshell.v1.OpenShell/ListSandboxes"
            $0.code = "PERMISSION_DENIED"; $0.reason = "not available to sandbox identities"; $0.count = 3; $0.firstNs = 1_700_000_000_000_000_000;
            $0.lastNs = 1_700_000_001_000_000_000
          })
      ),
      (
        // A TLS-handshake refusal of clients whose certificates failed verification: one identity, samples of
        // what they claimed (escaped, capped) and how many distinct subjects and addresses.
        "unverified",
        .accessRefused(
          .with {
            $0.identity = "unverified"; $0.peer = "ipv4:127.0.0.1:50125"; $0.rpc = "tls-handshake"; $0.code = "UNAUTHENTICATED"
            $0.reason = "client certificate not issued by the gateway CA"; $0.count = 30; $0.firstNs = 1_700_000_000_000_000_000
            $0.lastNs = 1_700_000_002_000_000_000; $0.claimedSubject = "CN=evil\\nline,OU=operator,O=openshell"; $0.distinctSubjects = 30
            $0.distinctPeers = 2
          })
      ),
      (
        // The same refusal as written before the samples existed: the claim, as presented, in the identity.
        "unverified:CN=old\nline\u{1B}[31m,O=openshell",
        .accessRefused(
          .with {
            $0.identity = "unverified:CN=old\nline\u{1B}[31m,O=openshell"; $0.peer = "ipv4:127.0.0.1:50126"; $0.rpc = "tls-handshake"
            $0.code = "UNAUTHENTICATED"; $0.reason = "client certificate expired"; $0.count = 1; $0.firstNs = 1_700_000_000_000_000_000
            $0.lastNs = 1_700_000_000_000_000_000
          })
      ),
      (
        op,
        .credentialsDisclosed(
          .with {
            $0.rpc = "GetProviderCredentials"; $0.recipient = op; $0.providers = ["gh"]; $0.keys = ["GITHUB_TOKEN"]
          })
      ),
      (
        sb,
        .credentialsDisclosed(
          .with {
            $0.rpc = "GetSandboxProviderEnvironment"; $0.recipient = sb; $0.sandboxID = sandbox; $0.providers = ["gh"]; $0.keys = ["GITHUB_TOKEN"]
          })
      ),
      (
        op,
        .execStarted(
          .with {
            $0.sandboxID = sandbox; $0.execID = "e1"; $0.command = ["sh", "-c", "echo hi", "[REDACTED]"]
          })
      ),
      (
        op,
        .execEnded(
          .with {
            $0.sandboxID = sandbox; $0.execID = "e1"; $0.exitCode = 3; $0.durationMs = 12
          })
      ),
      (
        op,
        .execEnded(
          .with {
            $0.sandboxID = sandbox; $0.execID = "e2"; $0.durationMs = 10_000; $0.error = "supervisor disconnected"
          })
      ),
      (
        "system",
        .sandboxMainProcessExited(
          .with {
            $0.id = sandbox; $0.exitCode = 1
          })
      ),
      (
        "system",
        .sandboxFailed(
          .with {
            $0.id = sandbox; $0.reason = "SupervisorExited"; $0.message = "exit 1"
          })
      ),
      (
        op,
        .sandboxStopping(
          .with {
            $0.id = sandbox; $0.reason = "requested"
          })
      ),
      ("system", .sandboxStopped(.with { $0.id = sandbox })),
      (op, .sandboxStarting(.with { $0.id = sandbox })),
      (op, .sandboxDeleting(.with { $0.id = sandbox })),
      ("system", .sandboxDeleted(.with { $0.id = sandbox })),
      (
        op,
        .serviceExposed(
          .with {
            $0.sandboxID = sandbox; $0.service = "web"; $0.targetPort = 8000; $0.authorizationMode = 1
          })
      ),
      (
        op,
        .serviceDeleted(
          .with {
            $0.sandboxID = sandbox; $0.service = "web"
          })
      ),
      (
        op,
        .providerDeleted(
          .with {
            $0.id = "p1"; $0.name = "gh"; $0.workspace = "default"
          })
      ),
      (
        op,
        .sandboxTemplateDeleted(
          .with {
            $0.id = "t1"; $0.name = "tpl"; $0.workspace = "team"
          })
      ),
      (
        op,
        .workspaceDeleted(
          .with {
            $0.id = "w1"; $0.name = "team"
          })
      ),
      (
        "system",
        .gatewayRestored(
          .with {
            $0.gatewayName = "gw"; $0.source = "/backups/a.oslog"; $0.records = 40
          })
      ),
      (
        sb,
        .supervisorConnected(
          .with {
            $0.sandboxID = sandbox; $0.sessionID = "ss1"; $0.instanceID = "i1"; $0.epoch = 2; $0.peer = "ipv4:10.200.0.2:41000"
            $0.identity = sb; $0.certificateSha256 = String(repeating: "cd", count: 32); $0.connectedNs = 1_700_000_000_000_000_000
            $0.unrecordedSessions = 4
          })
      ),
      (
        sb,
        .supervisorDisconnected(
          .with {
            $0.sandboxID = sandbox; $0.sessionID = "ss1"; $0.instanceID = "i1"; $0.peer = "ipv4:10.200.0.2:41000"; $0.durationMs = 5000
            $0.reason = "connection lost"
          })
      ),
      (
        "system",
        .supervisorDisconnected(
          .with {
            $0.sandboxID = sandbox; $0.instanceID = "i1"; $0.durationMs = 900; $0.unrecordedSessions = 7
            $0.reason = "reconnect loop: sessions beyond 5 per 60 s not recorded one by one"
          })
      ),
      (
        "system",
        .auditCheckpoint(
          .with {
            $0.coversSeq = 48; $0.chainHash = Data(repeating: 1, count: 32); $0.signature = Data(repeating: 2, count: 64); $0.keySha256 = "aa"
          })
      ),
    ]
    return list.map { ($0.0, GatewayEvent($0.1)) }
  }

  /// Appends ``events(canary:)`` (one record each, 1 ms apart) to a new log in `dir` and returns it.
  static func writeLog(_ dir: String, canary: String) async throws -> EventLog {
    let log = try EventLog.open(directory: dir)
    var t: UInt64 = 1_700_000_000_000_000_000
    for (actor, event) in events(canary: canary) {
      t += 1_000_000
      _ = try await log.append([event.newEvent(actor: actor, requestID: "req-\(t)", timestampNs: t)])
    }
    return log
  }

  /// The number of `GatewayEvent` kinds in the schema (the oneof's fields), to prove the list is complete:
  /// field numbers 1…511 each tried as an empty embedded message; a known one sets `kind`.
  static var schemaKindCount: Int {
    (1..<512).filter { field in
      var bytes: [UInt8] = []
      var tag = UInt64(field << 3 | 2)
      while tag >= 0x80 { bytes.append(UInt8(tag & 0x7f) | 0x80); tag >>= 7 }
      bytes += [UInt8(tag), 0]
      return (try? GatewayEvent(serializedBytes: bytes))?.kind != nil
    }.count
  }
}
