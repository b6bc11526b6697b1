import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import Synchronization

/// The sandbox's provider credentials (openshell-behavior.md §5.2 step 3, with pushes instead of a
/// restart): fetched with `GetSandboxProviderEnvironment` at start and each time the
/// `ConnectSupervisor` session is (re)accepted; in between, the gateway pushes
/// `ConfigUpdate{provider_environment}` on the session when a provider the sandbox uses is rotated,
/// updated, attached, detached or deleted.
///
/// The values never enter the sandbox: every workload process gets ``placeholders``
/// (`openshell:resolve:env:<KEY>`, ``CredentialPlaceholders``), and the policy proxy resolves them
/// with the current ``values`` in the requests it inspects and allows — so a rotation reaches the very
/// next request, also of processes already running. Values are never logged: log lines name keys only.
final class ProviderEnvironmentAgent: Sendable {
  let config: SupervisorConfig
  let logs: LogPusher
  let client: Openshell_V1_OpenShell.Client<RenewingTransport>
  let metadata: Metadata
  private let state = Mutex<(revision: UInt64, values: [String: String], fetched: Bool)>((0, [:], false))
  private let requests: AsyncStream<Void>
  private let continuation: AsyncStream<Void>.Continuation

  /// The agent of this process (the session and the workload reach it through the statics).
  static let current = Mutex<ProviderEnvironmentAgent?>(nil)

  init(config: SupervisorConfig, logs: LogPusher, client: Openshell_V1_OpenShell.Client<RenewingTransport>, metadata: Metadata) {
    self.config = config
    self.logs = logs
    self.client = client
    self.metadata = metadata
    (requests, continuation) = AsyncStream.makeStream()
    Self.current.withLock { $0 = self }
  }

  /// The current provider values (for the proxy only; empty before the first fetch).
  static var values: [String: String] { current.withLock { $0 }?.state.withLock { $0.values } ?? [:] }

  /// The provider variables for a new workload process: each key with its placeholder.
  static var placeholders: [String: String] { CredentialPlaceholders.environment(values) }

  /// A pushed `ConfigUpdate` (from the session); updates without a provider environment are ignored.
  static func deliver(_ update: Openshell_V1_ConfigUpdate) {
    guard update.hasProviderEnvironment, let agent = current.withLock({ $0 }) else { return }
    let snapshot = update.providerEnvironment
    var values: [String: String] = [:]
    for v in snapshot.values { values[v.name] = v.value }
    agent.apply(revision: snapshot.providerEnvRevision, values: values)
  }

  /// The session was (re)accepted: fetch again (pushes may have been missed meanwhile).
  static func refresh() { current.withLock { $0 }?.continuation.yield(()) }

  /// Waits until the first fetch finished (successfully or not), at most `timeout`.
  static func waitUntilFetched(timeout: Duration) async {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      guard let agent = current.withLock({ $0 }) else { return }
      if agent.state.withLock({ $0.fetched }) { return }
      try? await Task.sleep(for: .milliseconds(20))
    }
  }

  func run() async {
    continuation.yield(())
    for await _ in requests { await fetch() }
  }

  /// One fetch with retries; failure is not fatal (the environment stays as it was).
  private func fetch() async {
    var backoff = Duration.milliseconds(200)
    for _ in 0..<20 where !Task.isCancelled {
      do {
        let r = try await client.getSandboxProviderEnvironment(.with { $0.sandboxID = config.sandboxID }, metadata: metadata)
        apply(revision: r.providerEnvRevision, values: r.environment)
        return
      } catch let e as RPCError where [RPCError.Code.permissionDenied, .unimplemented, .failedPrecondition, .notFound].contains(e.code) {
        logs.log("provider environment unavailable: \(e.message)", level: "WARN")
        break
      } catch {
        try? await Task.sleep(for: backoff)
        backoff = min(backoff * 2, .seconds(2))
      }
    }
    state.withLock { $0.fetched = true }
  }

  /// Keeps the newest revision (a fetch and a push may race).
  func apply(revision: UInt64, values: [String: String]) {
    let changed = state.withLock { s -> Bool in
      s.fetched = true
      guard revision >= s.revision else { return false }
      let changed = s.values != values
      s.revision = revision
      s.values = values
      return changed
    }
    if changed {
      logs.log("provider environment revision \(revision): \(values.keys.sorted().joined(separator: ", "))")
    }
  }
}
