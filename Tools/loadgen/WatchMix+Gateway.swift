import EventLog
import Foundation
import OpenShellAPI
import Projections
import SwiftProtobuf

/// The gateway-wide records of the `lifecycle` mix (``WatchMix``): the workspace and providers created first,
/// then provider, setting and inference changes between sandboxes.
extension WatchMix {
  /// The workspace and the four providers the sandboxes use, created before the first sandbox.
  static func prelude(into s: inout [(GatewayEvent, String)]) {
    s.append(
      (
        GatewayEvent(
          .workspaceCreated(
            .with {
              $0.id = id("wsp", 1); $0.name = "research"; $0.labels = ["team": "ml", "cost-center": "4711"]
            })), operators[0]
      ))
    for (p, (name, key)) in [("github", "GITHUB_TOKEN"), ("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY"), ("gitlab", "GITLAB_TOKEN")]
      .enumerated()
    {
      s.append(
        (
          GatewayEvent(
            .providerCreated(
              .with {
                $0.id = id("prv", p); $0.name = name; $0.workspace = "default"; $0.type = name; $0.config = ["base_url": "https://api.\(name).com"]
                $0.credentials = [
                  .with {
                    $0.key = key; $0.sealed = Data((0..<72).map { UInt8(truncatingIfNeeded: $0 &* 5 &+ p) })
                  }
                ]
                $0.dataKeyID = id("key", 900 + p)
              })), operators[0]
        ))
    }
  }

  /// Provider, setting and inference records between sandboxes (one every few sandboxes each).
  static func gatewayWide(_ k: Int, _ op: String, into s: inout [(GatewayEvent, String)]) {
    let providers = ["github", "anthropic", "openai", "gitlab"]
    let p = k % providers.count
    let sealed = Data((0..<72).map { UInt8(truncatingIfNeeded: $0 &* 11 &+ k) })
    if k % 4 == 1 {
      s.append(
        (
          GatewayEvent(
            .providerCredentialRotated(
              .with {
                $0.id = id("prv", p);
                $0.credential = .with {
                  $0.key = "API_TOKEN"; $0.sealed = sealed
                }
              })), op
        ))
    }
    if k % 8 == 3 {
      s.append(
        (
          GatewayEvent(
            .providerUpdated(
              .with {
                $0.id = id("prv", p); $0.setConfig = ["base_url": "https://api.\(providers[p]).com", "org": "acme-\(k % 5)"]; $0.removedConfig = ["region"]
              })), op
        ))
    }
    if k % 10 == 7 {
      let temp = id("prv", 1000 + k)
      s.append(
        (
          GatewayEvent(
            .providerCreated(
              .with {
                $0.id = temp; $0.name = "scratch-\(k)"; $0.workspace = "default"; $0.type = "generic"; $0.config = ["base_url": "https://internal.example/api"]
                $0.credentials = [
                  .with {
                    $0.key = "TOKEN"; $0.sealed = sealed
                  },
                  .with {
                    $0.key = "CLIENT_SECRET"; $0.sealed = sealed
                  },
                ]
                $0.dataKeyID = id("key", 1000 + k)
              })), op
        ))
      s.append(
        (
          GatewayEvent(
            .providerDeleted(
              .with {
                $0.id = temp; $0.name = "scratch-\(k)"; $0.workspace = "default"
              })), op
        ))
    }
    if k % 12 == 5 {
      s.append(
        (
          GatewayEvent(
            .settingSet(
              .with {
                $0.scope = "global"; $0.key = "audit.refusal_window_s"; $0.value = "10"
              })), op
        ))
    }
    if k % 25 == 9 {
      s.append(
        (
          GatewayEvent(
            .inferenceRouteSet(
              .with {
                $0.route = "inference.local"; $0.provider = k % 2 == 0 ? "anthropic" : "openai"; $0.model = k % 2 == 0 ? "claude-sonnet-4" : "gpt-4.1"
                $0.timeoutSeconds = 120; $0.verified = true
              })), op
        ))
    }
  }
}
