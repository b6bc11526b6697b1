import ArgumentParser
import EventLog
import Foundation
import OpenShellAPI
import Projections
import SwiftProtobuf

/// The records of the `--watch-events` log (issue 12). `lifecycle` (the headline) is what a busy gateway
/// writes: per sandbox its request (labels, annotations, spec, providers, sealed environment), certificate,
/// provisioning, confinement condition, supervisor session, readiness, an attached provider, credential
/// disclosure and substitutions, a policy revision submitted and loaded, four exec sessions, a network-denial
/// report, a refusal window, an SSH session with a tunnel on every other sandbox, a setting on every third,
/// then stop, main process exit and deletion; and across sandboxes provider updates and rotations,
/// settings, inference routes and short-lived providers. `audit` is the earlier log of the four commonest
/// audit kinds only (refusals, disclosures, exec start/end).
enum WatchMix: String, CaseIterable {
  case lifecycle, audit

  /// `count` records stamped 1 ms apart from `t0` (ns), in the order a gateway would write them: whole
  /// sandbox lifecycles (every sandbox ends deleted, so the gateway started on the log launches nothing),
  /// the remainder filled with exec records.
  func records(count: Int, t0: UInt64) -> [NewEvent] {
    var out: [NewEvent] = []
    out.reserveCapacity(count + 64)
    var t = t0
    func add(_ e: GatewayEvent, _ actor: String) {
      t += 1_000_000
      out.append(e.newEvent(actor: actor, requestID: "r\(out.count)", timestampNs: t))
    }
    switch self {
    case .audit:
      for i in 0..<count {
        add(LoadGen.sample(i), i % 3 == 0 ? "sandbox:sb-\(i % 97)" : "operator:CN=bench/sha256:00")
      }
    case .lifecycle:
      var k = 0
      var script: [(GatewayEvent, String)] = []
      while true {
        script.removeAll(keepingCapacity: true)
        Self.lifecycle(k, into: &script)
        guard out.count + script.count <= count else { break }
        for (e, actor) in script { add(e, actor) }
        k += 1
      }
      var i = 0
      while out.count < count {
        add(LoadGen.sample(2 + 4 * (i / 2) + i % 2), "operator:CN=alice")
        i += 1
      }
    }
    return out
  }

  static let names = ["happy-otter", "brave-lynx", "quiet-heron", "swift-marten", "calm-ibis", "bold-tapir", "keen-gecko"]
  static let teams = ["ml", "infra", "web", "data"]
  static let operators = ["operator:CN=alice", "operator:CN=bob", "operator:CN=ci-runner"]
  static let commands: [[String]] = [
    ["git", "clone", "https://github.com/acme/service.git"], ["sh", "-c", "make test -j4"], ["python3", "-m", "pytest", "-q", "tests/"],
    ["npm", "ci"], ["cargo", "build", "--release"], ["ls", "-la", "/workspace"],
  ]

  /// A UUID-shaped id, deterministic in `n` (`prefix` "sbx", "prv", …).
  static func id(_ prefix: String, _ n: Int) -> String {
    let h = String(format: "%012x", UInt64(n) &* 0x9E37_79B9_7F4A_7C15 >> 16)
    return "\(prefix)-\(String(format: "%08x", n))-0000-4000-8000-\(h)"
  }

  /// 64 hex digits, deterministic in `n` (a SHA-256-shaped fingerprint).
  static func hex64(_ n: Int) -> String {
    var s = ""
    var x = UInt64(n) &+ 0x1234_5678
    for _ in 0..<4 {
      x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      s += String(format: "%016llx", x)
    }
    return s
  }
}

extension WatchMix: ExpressibleByArgument {}
