import Foundation
import OpenShellAPI
import PolicyKit
import Projections
import SandboxConfinement
import SandboxProtocol

/// Derives a sandbox's ``ConfinementPlan`` from its effective policy when the local driver starts it,
/// and describes the confinement that will be in force (the `Confinement` condition).
///
/// Startup-only sections (openshell-behavior.md §7): `filesystem_policy`, `landlock` and `process` are
/// taken once, at start, from the effective policy: the active global policy, else
/// ``ConfigModel/startedPolicy(_:_:)`` (the newest revision that did not fail, else `spec.policy`, else
/// ``PolicyRules/restrictiveDefault``), the same reference `UpdateConfig` checks live updates against. The plan goes into
/// `launch.json`, so the supervisor knows it before it starts any workload (no race with the first
/// `GetSandboxConfig`; a workload can never start unconfined because the policy had not arrived yet).
enum ConfinementPlanner {
  /// The policy whose startup sections a starting sandbox gets, and where it comes from.
  static func startupPolicy(_ s: SandboxRecord, _ state: GatewayState) -> (policy: Openshell_Sandbox_V1_SandboxPolicy, source: String) {
    if state.globalPolicyActive, let g = state.globalPolicy.revision(state.globalPolicy.activeVersion) {
      return (PolicyRules.normalized(ConfigModel.policy(g)), "global policy v\(g.version)")
    }
    return ConfigModel.startedPolicy(s, state)
  }

  /// The plan for `policy` (without `filesystem_policy`: the restrictive default's paths).
  /// - Parameters:
  ///   - user: the host identity of `sandbox` (nil when the gateway is not root: no user switch).
  ///   - simulateNoLandlock: the test switch (``ConfinementPlan/testDisableLandlockVariable``).
  static func plan(_ policy: Openshell_Sandbox_V1_SandboxPolicy, user: SandboxUser?, simulateNoLandlock: Bool) -> ConfinementPlan {
    let p = PolicyRules.normalized(policy)
    let fs = PolicyRules.startupFilesystem(p)
    return ConfinementPlan(
      user: p.process.runAsUser, uid: user?.uid, gid: user?.gid, groups: user.map { [$0.gid] } ?? [],
      readOnly: fs.readOnly, readWrite: fs.readWrite, includeWorkdir: fs.includeWorkdir, workdir: SandboxProtocol.workspace,
      landlockCompatibility: PolicyRules.startupLandlockCompatibility(p),
      simulateNoLandlock: simulateNoLandlock)
  }

  /// Whether the gateway's environment asks tests' simulation of a kernel without Landlock.
  static var simulateNoLandlock: Bool {
    ProcessInfo.processInfo.environment[ConfinementPlan.testDisableLandlockVariable] == "1"
  }

  /// The `Confinement` condition for a plan on this kernel: (status, reason, message).
  /// status `True` = everything the policy asks is enforced; `False` with reason `LandlockUnavailable` =
  /// best_effort ran without filesystem limits (high severity).
  static func condition(_ plan: ConfinementPlan, _ landlock: LandlockProbe.Status, source: String) -> (status: String, reason: String, message: String) {
    let user = plan.uid.map { "user \(plan.user) (uid \($0), gid \(plan.gid ?? $0))" } ?? "user of the gateway (rootless: no user switch)"
    let mode = plan.landlockCompatibility
    switch landlock {
    case .available(let abi):
      return ("True", "Enforced", "\(user); landlock ABI \(abi) \(mode); seccomp on; capabilities none; no_new_privs; from the \(source)")
    case .unavailable(let reason, let kernel):
      return (
        "False", "LandlockUnavailable",
        "\(user); landlock NOT applied (\(mode)): kernel \(kernel): \(reason); the sandbox runs WITHOUT filesystem limits; seccomp on; capabilities none; no_new_privs; from the \(source)"
      )
    }
  }
}
