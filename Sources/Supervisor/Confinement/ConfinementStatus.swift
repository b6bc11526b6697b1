import Foundation
import OpenShellAPI
import PolicyKit
import SandboxConfinement
import SandboxProtocol

/// What the supervisor tells about the confinement of its workloads, and how it keeps policy status
/// honest (openshell-behavior.md §7: `filesystem_policy`, `landlock` and `process` are startup-only).
enum ConfinementStatus {
  /// The start-up log line describing the effective confinement, and whether the sandbox must not run
  /// (`hard_requirement` on a kernel without Landlock: the supervisor exits, the sandbox turns ERROR).
  static func startup(_ plan: ConfinementPlan?) -> (line: String, level: String, fatal: Bool) {
    guard let plan else {
      return ("no confinement plan in the launch description: workloads will not be started", "ERROR", false)
    }
    let user = plan.uid.map { "user \(plan.user) (uid \($0))" } ?? "the supervisor's own user (rootless gateway)"
    let missing = LandlockRuleset.rules(plan).map(\.path).filter { !FileManager.default.fileExists(atPath: $0) }
    let skipped = missing.isEmpty ? "" : "; paths that do not exist (skipped): \(missing.joined(separator: ", "))"
    switch LandlockProbe.probe(simulateAbsent: plan.simulateNoLandlock) {
    case .available(let abi):
      return ("confinement: \(user), no capabilities, no_new_privs, landlock ABI \(abi) (\(plan.landlockCompatibility)), seccomp on\(skipped)", "INFO", false)
    case .unavailable(let reason, let kernel):
      if plan.landlockCompatibility == "hard_requirement" {
        return ("landlock.compatibility is hard_requirement but kernel \(kernel) offers no Landlock: \(reason); the sandbox cannot start", "ERROR", true)
      }
      return (
        "SECURITY (high): landlock unavailable on kernel \(kernel) (\(reason)); landlock.compatibility best_effort: workloads run WITHOUT filesystem limits; \(user), no capabilities, no_new_privs, seccomp on",
        "ERROR", false
      )
    }
  }

  /// The startup-only sections of `policy` that differ from what this sandbox started with: such a
  /// revision cannot be `loaded` here (a stop + start applies it). Empty when they match.
  static func startupMismatch(_ plan: ConfinementPlan?, _ policy: Openshell_Sandbox_V1_SandboxPolicy) -> [PolicyIssue] {
    guard let plan else { return [PolicyIssue(path: "filesystem_policy", message: "no confinement was applied at start")] }
    let p = PolicyRules.normalized(policy)
    let fs = PolicyRules.startupFilesystem(p)
    var out: [PolicyIssue] = []
    let restart = PolicyRules.restartHint
    // The driver's baseline enrichment (the trust directory) is not part of the policy.
    let planReadOnly = plan.readOnly.filter { $0 != SandboxProtocol.trustDirectory }
    if fs.readOnly != planReadOnly || fs.readWrite != plan.readWrite || fs.includeWorkdir != plan.includeWorkdir {
      out.append(PolicyIssue(path: "filesystem_policy", message: "filesystem policy differs from the one this sandbox started with (\(restart))"))
    }
    if PolicyRules.startupLandlockCompatibility(p) != plan.landlockCompatibility {
      out.append(PolicyIssue(path: "landlock", message: "landlock policy differs from the one this sandbox started with (\(restart))"))
    }
    if p.process.runAsUser != plan.user {
      out.append(PolicyIssue(path: "process", message: "process policy differs from the one this sandbox started with (\(restart))"))
    }
    return out
  }
}
