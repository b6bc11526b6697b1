import EventLog
import Foundation
import OpenShellAPI
import Projections
import SwiftProtobuf

/// One sandbox's records in the `lifecycle` mix (``WatchMix``), with the actors that write them.
extension WatchMix {
  /// Sandbox `k`'s records with their actors.
  static func lifecycle(_ k: Int, into s: inout [(GatewayEvent, String)]) {
    if k == 0 { prelude(into: &s) }
    let sb = id("sbx", k)
    let me = "sandbox:\(sb)"
    let op = operators[k % operators.count]
    let name = "\(names[k % names.count])-\(k)"
    let team = teams[k % teams.count]
    let ws = k % 5 == 0 ? "research" : "default"
    let startNs = Int64(1_700_000_000_000_000_000) + Int64(k) * 60_000_000_000
    let spec = Openshell_V1_SandboxSpec.with {
      $0.logLevel = "info"
      $0.environment = ["GIT_AUTHOR_NAME": "", "GIT_AUTHOR_EMAIL": "", "PIP_INDEX_URL": ""]
      $0.providers = ["github", "anthropic"]
    }
    let policy = Openshell_Sandbox_V1_SandboxPolicy.with {
      $0.version = 1
      $0.filesystem = .with {
        $0.includeWorkdir = true; $0.readOnly = ["/usr", "/lib", "/etc"]; $0.readWrite = ["/workspace", "/tmp"]
      }
      $0.landlock = .with { $0.compatibility = "best_effort" }
      $0.process = .with {
        $0.runAsUser = "sandbox"; $0.runAsGroup = "sandbox"
      }
      $0.networkPolicies = [
        "github": .with {
          $0.name = "github"
          $0.endpoints = [
            .with {
              $0.host = "api.github.com"; $0.port = 443
            },
            .with {
              $0.host = "github.com"; $0.port = 443
            },
          ]
          $0.binaries = [.with { $0.path = "/usr/bin/git" }, .with { $0.path = "/usr/bin/curl" }]
        },
        "pypi": .with {
          $0.name = "pypi"
          $0.endpoints = [
            .with {
              $0.host = "pypi.org"; $0.port = 443
            },
            .with {
              $0.host = "files.pythonhosted.org"; $0.port = 443
            },
          ]
        },
      ]
    }
    let sealed = Data((0..<60).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ k) })
    s.append(
      (
        GatewayEvent(
          .sandboxRequested(
            .with {
              $0.id = sb; $0.name = name; $0.workspace = ws
              $0.labels = ["app": "agent", "team": team, "ticket": "ENG-\(1000 + k % 9000)"]
              $0.annotations = ["openshell.io/created-by": "cli/0.1.5"]
              $0.spec = (try? spec.serializedData()) ?? Data()
              $0.providers = ["github", "anthropic"]
              $0.envKeyID = id("key", k)
              $0.sealedEnvironment = ["GIT_AUTHOR_NAME": sealed, "GIT_AUTHOR_EMAIL": sealed, "PIP_INDEX_URL": sealed]
            })), op
      ))
    s.append(
      (
        GatewayEvent(
          .certificateIssued(
            .with {
              $0.role = "sandbox"; $0.subject = "CN=\(me),OU=sandbox"; $0.fingerprintSha256 = hex64(k); $0.serialHex = String(hex64(k + 1).prefix(32))
              $0.notBeforeNs = startNs; $0.notAfterNs = startNs + 86_400_000_000_000; $0.sandboxID = sb
            })), "system"
      ))
    s.append(
      (
        GatewayEvent(
          .sandboxProvisioning(
            .with {
              $0.id = sb; $0.driver = "local"; $0.message = "starting the supervisor in bubblewrap namespaces"
            })), "system"
      ))
    s.append(
      (
        GatewayEvent(
          .sandboxConditionSet(
            .with {
              $0.id = sb; $0.type = "Confinement"; $0.status = "True"; $0.reason = "Enforced"
              $0.message = "landlock ABI 4 (best_effort), seccomp filter, user sandbox, no capabilities"
            })), "system"
      ))
    s.append((supervisor(sb, k, connected: true), me))
    s.append(
      (
        GatewayEvent(
          .sandboxReady(
            .with {
              $0.id = sb; $0.hostKeyFingerprint = "SHA256:\(hex64(k + 7).prefix(43))"; $0.mainProcessStartedNs = startNs + 900_000_000
            })), "system"
      ))
    s.append(
      (
        GatewayEvent(
          .sandboxProviderAttached(
            .with {
              $0.sandboxID = sb; $0.provider = k % 2 == 0 ? "openai" : "gitlab"
            })), op
      ))
    s.append(
      (
        GatewayEvent(
          .credentialsDisclosed(
            .with {
              $0.rpc = "GetSandboxProviderEnvironment"; $0.recipient = me; $0.sandboxID = sb; $0.providers = ["github", "anthropic"]
              $0.keys = ["GITHUB_TOKEN", "ANTHROPIC_API_KEY"]
            })), me
      ))
    s.append(
      (
        GatewayEvent(
          .policyRevisionSubmitted(
            .with {
              $0.sandboxID = sb; $0.version = 2; $0.contentSha256 = hex64(k + 3); $0.policy = (try? policy.serializedData()) ?? Data()
            })), op
      ))
    s.append(
      (
        GatewayEvent(
          .policyRevisionLoaded(
            .with {
              $0.sandboxID = sb; $0.version = 2
            })), me
      ))
    for j in 0..<4 {
      let exec = "ex-\(k)-\(j)"
      s.append(
        (
          GatewayEvent(
            .execStarted(
              .with {
                $0.sandboxID = sb; $0.execID = exec; $0.command = commands[(k + j) % commands.count]
              })), op
        ))
      s.append(
        (
          GatewayEvent(
            .execEnded(
              .with {
                $0.sandboxID = sb; $0.execID = exec; $0.exitCode = j == 3 && k % 4 == 0 ? 1 : 0; $0.durationMs = UInt64(200 + (k * 7 + j * 131) % 90_000)
              })), "system"
        ))
    }
    s.append(
      (
        GatewayEvent(
          .sandboxNetworkDenials(
            .with {
              $0.id = sb; $0.firstSeenNs = startNs + 5_000_000_000; $0.lastSeenNs = startNs + 14_000_000_000
              $0.denials = [
                .with {
                  $0.host = "registry.npmjs.org"; $0.port = 443; $0.binary = "/usr/bin/node"; $0.binarySha256 = hex64(k + 11);
                  $0.reason = "no policy allows this host"
                  $0.count = UInt32(1 + k % 9)
                },
                .with {
                  $0.host = "169.254.169.254"; $0.port = 80; $0.reason = "link-local address"; $0.count = 1
                },
              ]
            })), me
      ))
    s.append(
      (
        GatewayEvent(
          .credentialsSubstituted(
            .with {
              $0.sandboxID = sb; $0.firstSeenNs = startNs + 3_000_000_000; $0.lastSeenNs = startNs + 12_000_000_000
              $0.substitutions = [
                .with {
                  $0.key = "GITHUB_TOKEN"; $0.provider = "github"; $0.host = "api.github.com"; $0.port = 443; $0.binary = "/usr/bin/git";
                  $0.count = UInt32(3 + k % 20)
                }
              ]
            })), me
      ))
    s.append(
      (
        GatewayEvent(
          .accessRefused(
            .with {
              $0.identity = me; $0.peer = "ipv4:127.0.0.1:\(40000 + k % 20000)"; $0.rpc = "openshell.v1.OpenShell/ListSandboxes"
              $0.code = "PERMISSION_DENIED"; $0.reason = "not available to sandbox identities"; $0.count = UInt64(1 + k % 50)
              $0.firstNs = startNs + 6_000_000_000; $0.lastNs = startNs + 15_000_000_000
            })), "system"
      ))
    if k % 2 == 0 { ssh(sb, k, op, startNs, into: &s) }
    if k % 3 == 0 {
      s.append(
        (
          GatewayEvent(
            .settingSet(
              .with {
                $0.scope = sb; $0.key = "log_level"; $0.value = "debug"
              })), op
        ))
    }
    s.append(
      (
        GatewayEvent(
          .sandboxStopping(
            .with {
              $0.id = sb; $0.reason = "user request"
            })), op
      ))
    s.append((supervisor(sb, k, connected: false), "system"))
    s.append(
      (
        GatewayEvent(
          .sandboxMainProcessExited(
            .with {
              $0.id = sb; $0.exitCode = 143; $0.signal = 15
            })), "system"
      ))
    s.append((GatewayEvent(.sandboxStopped(.with { $0.id = sb })), "system"))
    s.append((GatewayEvent(.sandboxDeleting(.with { $0.id = sb })), op))
    s.append((GatewayEvent(.sandboxDeleted(.with { $0.id = sb })), "system"))
    gatewayWide(k, op, into: &s)
  }

  static func supervisor(_ sb: String, _ k: Int, connected: Bool) -> GatewayEvent {
    let session = "ses-\(String(format: "%08x", k))"
    let instance = "inst-\(String(format: "%06x", k * 13))"
    if connected {
      return GatewayEvent(
        .supervisorConnected(
          .with {
            $0.sandboxID = sb; $0.sessionID = session; $0.instanceID = instance; $0.epoch = 1; $0.peer = "ipv4:127.0.0.1:\(41000 + k % 20000)"
            $0.identity = "sandbox:\(sb)"; $0.certificateSha256 = hex64(k); $0.connectedNs = 1_700_000_000_000_000_000 + Int64(k) * 60_000_000_000
          }))
    }
    return GatewayEvent(
      .supervisorDisconnected(
        .with {
          $0.sandboxID = sb; $0.sessionID = session; $0.instanceID = instance; $0.peer = "ipv4:127.0.0.1:\(41000 + k % 20000)"
          $0.durationMs = Int64(30_000 + k % 50_000); $0.reason = "supervisor closed the stream"
        }))
  }

  /// An SSH session with one tunnel, closed and revoked.
  static func ssh(_ sb: String, _ k: Int, _ op: String, _ startNs: Int64, into s: inout [(GatewayEvent, String)]) {
    let session = id("ssh", k)
    let tunnel = "tun-\(String(format: "%08x", k))"
    s.append(
      (
        GatewayEvent(
          .sshSessionCreated(
            .with {
              $0.id = session; $0.sandboxID = sb; $0.tokenSha256 = hex64(k + 5); $0.expiresNs = startNs + 3_600_000_000_000
              $0.hostKeyFingerprint = "SHA256:\(hex64(k + 7).prefix(43))"
            })), op
      ))
    s.append(
      (
        GatewayEvent(
          .sshTunnelOpened(
            .with {
              $0.tunnelID = tunnel; $0.sessionID = session; $0.sandboxID = sb; $0.target = "ssh"
            })), op
      ))
    s.append(
      (
        GatewayEvent(
          .sshTunnelClosed(
            .with {
              $0.tunnelID = tunnel; $0.sessionID = session; $0.sandboxID = sb; $0.bytesToSandbox = UInt64(4096 + k * 17 % 100_000)
              $0.bytesFromSandbox = UInt64(65_536 + k * 31 % 1_000_000); $0.durationMs = Int64(12_000 + k % 600_000)
            })), "system"
      ))
    s.append((GatewayEvent(.sshSessionRevoked(.with { $0.id = session })), op))
  }
}
