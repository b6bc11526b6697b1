import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import PolicyKit
import Synchronization

/// The supervisor's side of policy, settings and inference delivery (openshell-behavior.md §5.2
/// steps 1, 5 and 8, with pushes instead of polls):
///
/// - at start, and each time the `ConnectSupervisor` session is (re)accepted, it fetches
///   `GetSandboxConfig`; in between, the gateway pushes `ConfigUpdate{sandbox_config}` on the session;
/// - a new sandbox policy (by version and hash) is validated with the L7 rules (`PolicyKit`) and its
///   startup-only sections are compared with the confinement in force (``ConfinementStatus``); the
///   result goes back with `ReportPolicyStatus` (LOADED, or FAILED with the message, keeping the last
///   good policy active). A valid policy is installed in the sandbox's policy proxy (``ProxyPolicy``)
///   *before* LOADED is reported, so `policy set --wait` returns only once the proxy enforces it.
///   Global policies are applied but never acknowledged, as OpenShell's;
/// - the inference bundle arrives over `Inference/WatchInferenceBundle` (the current one, then each new
///   revision); the proxy serves `https://inference.local` with the `inference.local` route
///   (``InferenceRouter``).
final class ConfigAgent: Sendable {
  struct Active: Sendable {
    var version: UInt32 = 0
    var hash = ""
    var source: Openshell_Sandbox_V1_PolicySource = .unspecified
    var policy = Openshell_Sandbox_V1_SandboxPolicy()
    var settings: [String: Openshell_Sandbox_V1_EffectiveSetting] = [:]
    var configRevision: UInt64 = 0
    var bundleRevision = ""
    var routes: [Openshell_Inference_V1_ResolvedRoute] = []
  }

  let config: SupervisorConfig
  let logs: LogPusher
  let client: Openshell_V1_OpenShell.Client<RenewingTransport>
  let inference: Openshell_Inference_V1_Inference.Client<RenewingTransport>
  let metadata: Metadata
  /// The proxy's policy holder (nil when the sandbox has no network confinement).
  let proxyPolicy: ProxyPolicy?
  let state = Mutex(Active())
  /// Last (version, hash, source) examined, so a repeated snapshot is not re-validated or re-reported.
  private let seen = Mutex<String>("")
  private let updates: AsyncStream<Openshell_Sandbox_V1_SandboxConfigSnapshot?>
  private let continuation: AsyncStream<Openshell_Sandbox_V1_SandboxConfigSnapshot?>.Continuation

  /// The agent of this process (the session hands pushed updates to it).
  static let current = Mutex<ConfigAgent?>(nil)

  init(config: SupervisorConfig, logs: LogPusher, grpc: GRPCClient<RenewingTransport>, metadata: Metadata, proxyPolicy: ProxyPolicy? = nil) {
    self.config = config
    self.proxyPolicy = proxyPolicy
    self.logs = logs
    self.client = Openshell_V1_OpenShell.Client(wrapping: grpc)
    self.inference = Openshell_Inference_V1_Inference.Client(wrapping: grpc)
    self.metadata = metadata
    (updates, continuation) = AsyncStream.makeStream()
    Self.current.withLock { $0 = self }
  }

  /// A pushed `ConfigUpdate` (from the session).
  static func deliver(_ update: Openshell_V1_ConfigUpdate) {
    guard update.hasSandboxConfig else { return }
    current.withLock { $0 }?.continuation.yield(update.sandboxConfig)
  }

  /// The session was (re)accepted: fetch the configuration (pushes may have been missed meanwhile).
  static func refresh() { current.withLock { $0 }?.continuation.yield(nil) }

  func run() async {
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await self.applyLoop() }
      group.addTask { await self.watchBundle() }
    }
  }

  private func applyLoop() async {
    continuation.yield(nil)
    for await update in updates {
      if let update {
        await apply(update)
        continue
      }
      var backoff = Duration.milliseconds(200)
      while !Task.isCancelled {
        do {
          let r = try await client.getSandboxConfig(.with { $0.name = config.sandboxID }, metadata: metadata)
          await apply(Self.snapshot(r))
          break
        } catch {
          try? await Task.sleep(for: backoff)
          backoff = min(backoff * 2, .seconds(2))
        }
      }
    }
  }

  static func snapshot(_ r: Openshell_Sandbox_V1_GetSandboxConfigResponse) -> Openshell_Sandbox_V1_SandboxConfigSnapshot {
    .with {
      if r.hasPolicy { $0.policy = r.policy }
      $0.version = r.version
      $0.policyHash = r.policyHash
      $0.settings = r.settings
      $0.configRevision = r.configRevision
      $0.policySource = r.policySource
      $0.globalPolicyVersion = r.globalPolicyVersion
      $0.settingsRevision = r.settingsRevision
    }
  }

  func apply(_ s: Openshell_Sandbox_V1_SandboxConfigSnapshot) async {
    state.withLock {
      $0.settings = s.settings; $0.configRevision = s.configRevision
    }
    let key = "\(s.policySource.rawValue)/\(s.globalPolicyVersion)/\(s.version)/\(s.policyHash)"
    let isNew = seen.withLock { old -> Bool in
      guard old != key else { return false }
      old = key
      return true
    }
    guard isNew, s.hasPolicy else { return }
    // Startup-only sections are what the sandbox started with, or the revision cannot be loaded here.
    let issues = ConfinementStatus.startupMismatch(config.launch.confinement, s.policy) + PolicyRules.l7Issues(s.policy)
    for w in PolicyRules.l7Warnings(s.policy) { logs.log("policy warning: \(w)", level: "WARN") }
    let global = s.policySource == .global
    let label = global ? "global policy v\(s.globalPolicyVersion)" : "policy v\(s.version)"
    if issues.isEmpty {
      state.withLock {
        $0.version = s.version
        $0.hash = s.policyHash
        $0.source = s.policySource
        $0.policy = s.policy
      }
      let generation = proxyPolicy?.install(s.policy, label: label)
      logs.log("\(label) loaded (hash \(s.policyHash.prefix(12)))" + (generation.map { ", proxy generation \($0)" } ?? ""))
    } else {
      let active = state.withLock { $0.version }
      logs.log("\(label) failed to load; keeping policy v\(active): \(issues.map(\.description).joined(separator: "; "))", level: "WARN")
    }
    // Global policies are never acknowledged (OpenShell); version 0 means no sandbox revision.
    guard !global, s.version > 0 else { return }
    let report = Openshell_V1_ReportPolicyStatusRequest.with {
      $0.sandboxID = config.sandboxID
      $0.version = s.version
      $0.status = issues.isEmpty ? .loaded : .failed
      $0.loadError = issues.map(\.description).joined(separator: "; ")
    }
    for attempt in 0..<20 {
      do {
        _ = try await client.reportPolicyStatus(report, metadata: metadata)
        return
      } catch let e as RPCError where e.code == .notFound || e.code == .invalidArgument || e.code == .permissionDenied {
        logs.log("policy status report for v\(s.version) refused: \(e.message)", level: "WARN")
        return
      } catch {
        try? await Task.sleep(for: .milliseconds(100 * (attempt + 1)))
      }
    }
  }

  /// Keeps `WatchInferenceBundle` open (reconnecting), storing each new bundle.
  private func watchBundle() async {
    var backoff = Duration.milliseconds(200)
    while !Task.isCancelled {
      let received = Mutex(false)
      do {
        try await inference.watchInferenceBundle(.with { $0.sandboxID = config.sandboxID }, metadata: metadata) { response in
          for try await bundle in response.messages {
            received.withLock { $0 = true }
            let changed = self.state.withLock { a -> Bool in
              guard a.bundleRevision != bundle.revision else { return false }
              a.bundleRevision = bundle.revision
              a.routes = bundle.routes
              return true
            }
            if changed {
              let names = bundle.routes.map { "\($0.name)→\($0.providerType)/\($0.modelID)" }.joined(separator: ", ")
              self.logs.log("inference bundle revision \(bundle.revision.isEmpty ? "(empty)" : bundle.revision): \(names.isEmpty ? "no routes" : names)")
            }
          }
        }
      } catch let e as RPCError where e.code == .unimplemented || e.code == .permissionDenied {
        logs.log("inference routing disabled: \(e.message)", level: "WARN")
        return
      } catch {}
      if received.withLock({ $0 }) { backoff = .milliseconds(200) }
      try? await Task.sleep(for: backoff)
      backoff = min(backoff * 2, .seconds(2))
    }
  }
}
