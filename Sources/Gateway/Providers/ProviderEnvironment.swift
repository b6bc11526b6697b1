import Foundation
import GRPCCore
import Logging
import OpenShellAPI
import Projections

/// The credentials a sandbox receives: the merged `credentials` of the providers attached to it.
public struct ProviderEnvironment: Sendable, Equatable {
  /// Variable → plaintext value. Never log this.
  public var values: [String: String]
  /// Monotonic revision (the projection's seq when it was resolved).
  public var revision: UInt64
  /// Provider names in merge order.
  public var providers: [String]
}

/// Resolves a sandbox's provider environment (openshell-behavior.md §1D "Delivery to the sandbox"):
/// providers in `spec.providers` order, then any attached later (sorted); a missing provider is
/// FAILED_PRECONDITION naming it; on duplicate keys the first provider wins; keys that are not
/// `[A-Za-z_][A-Za-z0-9_]*` are skipped.
enum ProviderEnvironmentResolver {
  static func resolve(sandboxID: String, state: GatewayState, vault: SecretVault) throws -> ProviderEnvironment {
    guard let sandbox = state.sandboxes[sandboxID] else { throw RPCErrors.notFound("sandbox \(sandboxID)") }
    let names = mergeOrder(sandbox)
    var values: [String: String] = [:]
    for name in names {
      guard let p = state.provider(named: name, workspace: sandbox.workspace) else {
        throw RPCErrors.failedPrecondition("provider \(name) attached to sandbox \(sandbox.workspace)/\(sandbox.name) does not exist")
      }
      for key in p.credentials.keys.sorted() where values[key] == nil && ProviderCatalog.isEnvironmentName(key) {
        do {
          values[key] = try vault.open(p.credentials[key]!, keyID: p.dataKeyID, name: key)
        } catch {
          throw RPCErrors.undecryptable(key: key, provider: p.name, error)
        }
      }
    }
    return ProviderEnvironment(values: values, revision: state.lastSeq, providers: names)
  }

  /// The sandbox's attached providers in merge order: `spec.providers` order, then any attached later.
  static func mergeOrder(_ sandbox: SandboxRecord) -> [String] {
    let specOrder = (try? Openshell_V1_SandboxSpec(serializedBytes: sandbox.spec))?.providers ?? []
    var names: [String] = []
    for n in specOrder where sandbox.providers.contains(n) && !names.contains(n) { names.append(n) }
    for n in sandbox.providers where !names.contains(n) { names.append(n) }
    return names
  }

  /// Credential key → name of the attached provider whose value the sandbox receives for it (the first in
  /// merge order that holds the key, as ``resolve(sandboxID:state:vault:)`` merges). Names only: nothing
  /// is decrypted; providers that no longer exist are skipped.
  static func keyHolders(sandbox: SandboxRecord, state: GatewayState) -> [String: String] {
    var holders: [String: String] = [:]
    for name in mergeOrder(sandbox) {
      guard let p = state.provider(named: name, workspace: sandbox.workspace) else { continue }
      for key in p.credentials.keys where holders[key] == nil { holders[key] = name }
    }
    return holders
  }

  /// The sandboxes (ids, sorted) of `workspace` that use provider `name`.
  static func users(of name: String, workspace: String, in state: GatewayState) -> [SandboxRecord] {
    state.sandboxList(workspace: workspace).filter { $0.providers.contains(name) }
  }
}

/// Pushes provider-environment changes to running sandboxes: for every ``ProviderChange`` (followed from the
/// log, ``ProviderChangeFeed``, checkpoint ``checkpointName``) it sends each affected sandbox's connected
/// supervisor a `ConfigUpdate{provider_environment}` with the full, freshly resolved environment (no
/// polling; delivery is immediate, and after a crash the changes not yet handled are pushed at start).
/// Sandboxes without a connected supervisor are skipped: they fetch the environment with
/// `GetSandboxProviderEnvironment` when their supervisor (re)starts.
public struct ProviderDelivery: Sendable {
  /// The delivery's checkpoint in the log.
  public static let checkpointName = "provider-delivery"
  let store: GatewayStore
  let vault: SecretVault
  let hub: SupervisorHub
  private let logger = Logger(label: "openshell.gateway.providers")

  /// A delivery over `store`; `vault` opens the sealed credentials, `hub` reaches connected supervisors.
  public init(store: GatewayStore, vault: SecretVault, hub: SupervisorHub) {
    self.store = store
    self.vault = vault
    self.hub = hub
  }

  /// Runs until the task is cancelled.
  public func run() async {
    await ProviderChangeFeed.follow(store: store, checkpoint: Self.checkpointName) { change in
      let state = await store.state
      for id in change.sandboxIDs { await push(id, state: state) }
    }
  }

  /// Sends the current environment to the sandbox's supervisor, if one is connected, after recording the
  /// disclosure (key names only) in the log; nothing is sent when that record cannot be written.
  /// - Returns: whether a message was sent.
  @discardableResult
  public func push(_ sandboxID: String, state: GatewayState) async -> Bool {
    guard hub.connectedInstance(sandboxID) != nil else { return false }
    let env: ProviderEnvironment
    do {
      env = try ProviderEnvironmentResolver.resolve(sandboxID: sandboxID, state: state, vault: vault)
    } catch {
      logger.warning("provider environment of sandbox \(sandboxID) not delivered: \(error)")
      return false
    }
    do {
      try await AuditRecorder(store: store).disclosed(
        rpc: "ConfigUpdate.provider_environment", recipient: "sandbox:\(sandboxID)", sandboxID: sandboxID,
        providers: env.providers, keys: Array(env.values.keys))
    } catch {
      logger.warning("provider environment of sandbox \(sandboxID) not delivered: its disclosure record failed: \(error)")
      return false
    }
    let message = Openshell_V1_GatewayMessage.with {
      $0.configUpdate = .with {
        $0.updateID = "provider-env-\(env.revision)"
        $0.providerEnvironment = .with {
          $0.providerEnvRevision = env.revision
          $0.values = env.values.keys.sorted().map { key in
            .with {
              $0.name = key; $0.value = env.values[key]!
            }
          }
        }
      }
    }
    return hub.send(message, to: sandboxID)
  }
}
