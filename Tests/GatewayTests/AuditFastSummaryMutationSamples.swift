import Foundation
import Projections

@testable import Gateway

extension AuditFastSummaryMutationTests {
  /// Every mutation kind with edge values (each branch of its text).
  static let events: [GatewayEvent] = {
    let hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    let keys = ["b": "2", "a-b": "3", "a": "1", "ab": "4", "B": "0", "": "empty", "z z": ""]
    return [
      GatewayEvent(
        .workspaceCreated(
          .with {
            $0.id = "w"; $0.name = "research"; $0.labels = keys
          })),
      GatewayEvent(.workspaceCreated(Openshell_Events_V1_WorkspaceCreated())),
      GatewayEvent(.workspaceDeleted(.with { $0.name = "research" })),
      GatewayEvent(
        .sandboxTemplateCreated(
          .with {
            $0.workspace = "default"; $0.name = "py"; $0.labels = keys; $0.annotations = keys; $0.spec = Data([0, 0xFF])
          })),
      GatewayEvent(
        .sandboxTemplateDeleted(
          .with {
            $0.id = "t"; $0.workspace = ""; $0.name = ""
          })),
      GatewayEvent(
        .sandboxRequested(
          .with {
            $0.id = "sbx-1"; $0.name = "otter"; $0.workspace = "default"; $0.labels = keys; $0.annotations = ["x": "y"]; $0.spec = Data([0x80, 0xFF, 0])
            $0.templateName = "py"; $0.templateVersion = UInt64.max; $0.providers = ["github", "", "anthropic"]; $0.envKeyID = "k"
            $0.sealedEnvironment = ["A": Data([0xFF, 0xFE]), "B": Data()]; $0.sealedTemplateEnvironment = ["C": Data([0xC3])]
            $0.serviceExposures = [
              .with {
                $0.service = "web"; $0.targetPort = 8080; $0.authorizationMode = -1
              }
            ]
          })),
      GatewayEvent(.sandboxRequested(Openshell_Events_V1_SandboxRequested())),
      GatewayEvent(.sandboxRequested(.with { $0.providers = [""] })),
      GatewayEvent(
        .sandboxProvisioning(
          .with {
            $0.id = "s"; $0.driver = "local"; $0.message = "starting"
          })),
      GatewayEvent(.sandboxProvisioning(.with { $0.driver = "local" })),
      GatewayEvent(
        .sandboxReady(
          .with {
            $0.id = "s"; $0.hostKeyFingerprint = "SHA256:x"; $0.mainProcessStartedNs = Int64.min
          })),
      GatewayEvent(
        .sandboxFailed(
          .with {
            $0.reason = "SupervisorExited"; $0.message = "exit 1"
          })),
      GatewayEvent(.sandboxFailed(Openshell_Events_V1_SandboxFailed())),
      GatewayEvent(
        .sandboxStopping(
          .with {
            $0.id = "s"; $0.reason = "user request"
          })),
      GatewayEvent(.sandboxStopping(.with { $0.id = "s" })),
      GatewayEvent(.sandboxStopped(.with { $0.id = "s" })),
      GatewayEvent(.sandboxStarting(.with { $0.id = "s" })),
      GatewayEvent(.sandboxDeleting(.with { $0.id = "s" })),
      GatewayEvent(.sandboxDeleted(Openshell_Events_V1_SandboxDeleted())),
      GatewayEvent(
        .sandboxMainProcessExited(
          .with {
            $0.exitCode = 143; $0.signal = 15
          })),
      GatewayEvent(
        .sandboxMainProcessExited(
          .with {
            $0.exitCode = Int32.min; $0.signal = -1
          })),
      GatewayEvent(.sandboxMainProcessExited(.with { $0.exitCode = Int32.max })),
      GatewayEvent(
        .sandboxConditionSet(
          .with {
            $0.id = "s"; $0.type = "Ready"; $0.status = "False"; $0.reason = "OOMKilled"; $0.message = "m"
          })),
      GatewayEvent(.sandboxConditionSet(Openshell_Events_V1_SandboxConditionSet())),
      GatewayEvent(
        .sandboxNetworkDenials(
          .with {
            $0.id = "s"; $0.firstSeenNs = -1; $0.lastSeenNs = Int64.max
            $0.denials = [
              .with {
                $0.host = "a.example"; $0.port = 443; $0.binary = "/usr/bin/curl"; $0.binarySha256 = hex; $0.reason = "no policy"; $0.count = UInt32.max
              },
              .with {
                $0.host = ""; $0.count = UInt32.max
              }, Openshell_Events_V1_NetworkDenial(),
            ]
          })),
      GatewayEvent(.sandboxNetworkDenials(.with { $0.id = "s" })),
      GatewayEvent(
        .certificateIssued(
          .with {
            $0.role = "sandbox"; $0.subject = "CN=sandbox:s,OU=sandbox"; $0.fingerprintSha256 = hex; $0.serialHex = "01"; $0.notBeforeNs = -5
            $0.notAfterNs = Int64.max; $0.subjectAltNames = ["localhost", "127.0.0.1"]; $0.sandboxID = "s"; $0.replacesFingerprint = hex
          })),
      GatewayEvent(
        .certificateIssued(
          .with {
            $0.role = "ca"; $0.fingerprintSha256 = "abc"
          })),
      GatewayEvent(
        .serviceExposed(
          .with {
            $0.sandboxID = "s"; $0.service = "web"; $0.targetPort = UInt32.max; $0.authorizationMode = 2
          })),
      GatewayEvent(
        .serviceExposed(
          .with {
            $0.sandboxID = "s"; $0.authorizationMode = 1
          })),
      GatewayEvent(.serviceExposed(.with { $0.authorizationMode = -2 })),
      GatewayEvent(
        .serviceDeleted(
          .with {
            $0.sandboxID = "s"; $0.service = "web"
          })),
      GatewayEvent(.serviceDeleted(.with { $0.sandboxID = "s" })),
      GatewayEvent(
        .sandboxProviderAttached(
          .with {
            $0.sandboxID = "s"; $0.provider = "github"
          })),
      GatewayEvent(
        .sandboxProviderDetached(
          .with {
            $0.sandboxID = "s"; $0.provider = ""
          })),
      GatewayEvent(
        .providerCreated(
          .with {
            $0.id = "p"; $0.name = "github"; $0.workspace = "default"; $0.type = "github"; $0.config = keys; $0.dataKeyID = "k"
            $0.credentials = [
              .with {
                $0.key = "b"; $0.sealed = Data([0xFF])
              }, .with { $0.key = "a" }, .with { $0.key = "b" }, .with { $0.key = "A_B" },
            ]
          })),
      GatewayEvent(.providerCreated(Openshell_Events_V1_ProviderCreated())),
      GatewayEvent(
        .providerUpdated(
          .with {
            $0.id = "p"; $0.setConfig = keys; $0.removedConfig = ["x", "y"]
            $0.setCredentials = [
              .with {
                $0.key = "T2"; $0.sealed = Data([1])
              }, .with { $0.key = "T1" },
            ]; $0.removedCredentials = ["OLD"]
          })),
      GatewayEvent(.providerUpdated(.with { $0.removedCredentials = ["OLD", ""] })),
      GatewayEvent(.providerUpdated(.with { $0.setCredentials = [Openshell_Events_V1_SealedValue()] })),
      GatewayEvent(.providerUpdated(.with { $0.id = "p" })),
      GatewayEvent(
        .providerCredentialRotated(
          .with {
            $0.id = "p";
            $0.credential = .with {
              $0.key = "TOKEN"; $0.sealed = Data([0xFF, 0])
            }
          })),
      GatewayEvent(.providerCredentialRotated(.with { $0.id = "p" })),
      GatewayEvent(
        .providerDeleted(
          .with {
            $0.id = "p"; $0.name = "github"; $0.workspace = "default"
          })),
      GatewayEvent(
        .policyRevisionSubmitted(
          .with {
            $0.sandboxID = "s"; $0.version = UInt32.max; $0.contentSha256 = hex; $0.policy = Data([0xFF])
          })),
      GatewayEvent(.policyRevisionSubmitted(.with { $0.contentSha256 = "abc" })),
      GatewayEvent(
        .policyRevisionLoaded(
          .with {
            $0.sandboxID = "s"; $0.version = 2
          })),
      GatewayEvent(
        .policyRevisionFailed(
          .with {
            $0.version = 3; $0.message = "bad rule"
          })),
      GatewayEvent(.policyRevisionFailed(Openshell_Events_V1_PolicyRevisionFailed())),
      GatewayEvent(
        .policyRevisionSuperseded(
          .with {
            $0.version = 3; $0.supersededBy = UInt32.max
          })),
      GatewayEvent(
        .globalPolicySet(
          .with {
            $0.version = 1; $0.contentSha256 = hex; $0.policy = Data([0x80])
          })),
      GatewayEvent(.globalPolicyDeleted(.with { $0.version = 7 })),
      GatewayEvent(.globalPolicyDeleted(Openshell_Events_V1_GlobalPolicyDeleted())),
      GatewayEvent(
        .settingSet(
          .with {
            $0.scope = "global"; $0.key = "log_level"; $0.value = "debug"
          })),
      GatewayEvent(.settingSet(Openshell_Events_V1_SettingSet())),
      GatewayEvent(
        .settingDeleted(
          .with {
            $0.scope = "s"; $0.key = "k"
          })),
      GatewayEvent(
        .inferenceRouteSet(
          .with {
            $0.route = "inference.local"; $0.provider = "anthropic"; $0.model = "m"; $0.timeoutSeconds = UInt32.max; $0.verified = true
          })),
      GatewayEvent(.inferenceRouteSet(Openshell_Events_V1_InferenceRouteSet())),
      GatewayEvent(.inferenceRouteDeleted(.with { $0.route = "sandbox-system" })),
      GatewayEvent(
        .inferenceBundlePublished(
          .with {
            $0.revision = hex; $0.routes = ["inference.local", "sandbox-system"]
          })),
      GatewayEvent(.inferenceBundlePublished(Openshell_Events_V1_InferenceBundlePublished())),
      GatewayEvent(
        .sshSessionCreated(
          .with {
            $0.id = "ssh"; $0.sandboxID = "s"; $0.tokenSha256 = hex; $0.expiresNs = 1_700_000_000_123_456_789; $0.hostKeyFingerprint = "SHA256:k"
          })),
      GatewayEvent(
        .sshSessionCreated(
          .with {
            $0.id = "ssh"; $0.expiresNs = 0
          })),
      GatewayEvent(.sshSessionCreated(.with { $0.expiresNs = -1 })),
      GatewayEvent(.sshSessionCreated(.with { $0.expiresNs = Int64.max })),
      GatewayEvent(.sshSessionRevoked(.with { $0.id = "ssh" })),
      GatewayEvent(
        .credentialsSubstituted(
          .with {
            $0.sandboxID = "s"; $0.firstSeenNs = 1; $0.lastSeenNs = -1
            $0.substitutions = [
              .with {
                $0.key = "GITHUB_TOKEN"; $0.provider = "github"; $0.host = "api.github.com"; $0.port = 443; $0.binary = "/usr/bin/git"; $0.count = 3
              },
              .with {
                $0.key = "K"; $0.count = UInt32.max
              },
              .with {
                $0.key = "K"; $0.host = "h"; $0.port = UInt32.max; $0.count = UInt32.max
              },
            ]
          })),
      GatewayEvent(.credentialsSubstituted(.with { $0.sandboxID = "s" })),
    ]
  }()
}
