import EventLog
import Foundation
import Logging
import OpenShellAPI
import Projections

/// Sandbox environment values (`sandbox create --env K=V`, `spec.environment`, `spec.template.environment`
/// including what a workload template folded in) never enter the log in plain text (issue 16).
///
/// Each sandbox with a non-empty value gets its own data key in the ``SecretVault``, with the id
/// ``keyID(sandboxID:)`` (derived from the sandbox id, so that the key can be found and shredded from a
/// `sandbox.deleted` event alone). `sandbox.requested` carries the spec with every value emptied (names
/// kept) and the values sealed under that key, bound to `env/NAME` or `template-env/NAME`. The driver opens
/// them when it launches the sandbox; every output shows ``redacted`` instead of a value. Deleting the
/// sandbox destroys the key (``SandboxEnvironmentShredder``), after which the sealed values in the log can
/// never be opened again (crypto-shredding), while the hash chain still verifies.
public enum SandboxEnvironmentSecrets {
  /// What outputs (GetSandbox, ListSandboxes, WatchSandbox, the CLI) show in place of a sealed value.
  public static let redacted = ProviderCatalog.redacted

  /// The vault key id of sandbox `sandboxID`'s environment: `dk-sbx-<sandbox id>`.
  public static func keyID(sandboxID: String) -> String { "dk-sbx-" + sandboxID }

  /// The parts of a `sandbox.requested` event that hold the environment.
  public struct Sealed: Sendable {
    /// The spec with every environment value emptied.
    public var spec: Openshell_V1_SandboxSpec
    /// Empty when nothing needed sealing (no key was created).
    public var keyID: String
    /// `spec.environment`: variable name → sealed value (AES-GCM under ``keyID``).
    public var environment: [String: Data]
    /// `spec.template.environment`: variable name → sealed value.
    public var templateEnvironment: [String: Data]
  }

  /// Seals the environment values of `spec` for sandbox `sandboxID`, creating its data key when any value
  /// is non-empty. The caller destroys the key (``discard(sandboxID:vault:)``) when the event is not
  /// appended; an orphan key left by a crash is destroyed at the next start (``DataKeyJanitor``).
  /// - Throws: `SecretVault.VaultError` when the key cannot be written (e.g. `ENOSPC`).
  public static func seal(_ spec: Openshell_V1_SandboxSpec, sandboxID: String, vault: SecretVault) throws -> Sealed {
    var out = Sealed(spec: spec, keyID: "", environment: [:], templateEnvironment: [:])
    guard spec.environment.values.contains(where: { !$0.isEmpty }) || spec.template.environment.values.contains(where: { !$0.isEmpty })
    else { return out }
    let keyID = keyID(sandboxID: sandboxID)
    try vault.createDataKey(id: keyID)
    out.keyID = keyID
    for (name, value) in spec.environment where !value.isEmpty {
      out.environment[name] = try vault.seal(value, keyID: keyID, name: "env/" + name)
      out.spec.environment[name] = ""
    }
    for (name, value) in spec.template.environment where !value.isEmpty {
      out.templateEnvironment[name] = try vault.seal(value, keyID: keyID, name: "template-env/" + name)
      out.spec.template.environment[name] = ""
    }
    return out
  }

  /// Destroys the data key of a sandbox whose `sandbox.requested` was not appended. Never throws: a key
  /// left behind is an orphan that the next start destroys.
  public static func discard(sandboxID: String, vault: SecretVault) {
    try? vault.destroyDataKey(keyID(sandboxID: sandboxID))
  }

  /// The environment a sandbox's processes get: the template's variables overridden by the spec's, with
  /// sealed values opened (plain values of logs recorded before sealing are used as they are).
  /// - Throws: `SecretVault.VaultError` when the key was destroyed or a value does not authenticate (the
  ///   driver then fails the sandbox rather than start it without its environment).
  public static func environment(of s: SandboxRecord, vault: SecretVault?) throws -> [String: String] {
    let spec = (try? Openshell_V1_SandboxSpec(serializedBytes: s.spec)) ?? .init()
    var template = spec.template.environment
    var own = spec.environment
    if let sealed = s.sealedEnvironment {
      guard let vault else { throw SecretVault.VaultError(message: "sandbox \(s.id) has sealed environment values but no vault is open") }
      for (name, value) in sealed.templateEnvironment {
        template[name] = try vault.open(value, keyID: sealed.keyID, name: "template-env/" + name)
      }
      for (name, value) in sealed.environment { own[name] = try vault.open(value, keyID: sealed.keyID, name: "env/" + name) }
    }
    return template.merging(own) { _, b in b }
  }

  /// `spec` as outputs show it: sealed values replaced by ``redacted``.
  public static func redact(_ spec: inout Openshell_V1_SandboxSpec, _ sealed: SealedEnvironmentRecord?) {
    guard let sealed else { return }
    for name in sealed.environment.keys { spec.environment[name] = redacted }
    for name in sealed.templateEnvironment.keys { spec.template.environment[name] = redacted }
  }

  /// The opened sealed values of sandbox `s` (for redacting its exec command lines in the audit, like
  /// provider secrets; never stored); empty when they cannot be opened.
  static func sealedValues(of s: SandboxRecord, vault: SecretVault) -> [String] {
    guard let sealed = s.sealedEnvironment else { return [] }
    let own = sealed.environment.compactMap { try? vault.open($0.value, keyID: sealed.keyID, name: "env/" + $0.key) }
    let template = sealed.templateEnvironment.compactMap { try? vault.open($0.value, keyID: sealed.keyID, name: "template-env/" + $0.key) }
    return own + template
  }
}

/// The reactor that crypto-shreds a sandbox's environment key once its `sandbox.deleted` event is durable.
/// It follows the log from the head at start; deletions before that (a crash between the append and the
/// shredding) are covered by ``DataKeyJanitor`` at start-up. Destroying is idempotent.
struct SandboxEnvironmentShredder {
  let store: GatewayStore
  let vault: SecretVault
  private let logger = Logger(label: "openshell.secrets.shredder")

  init(store: GatewayStore, vault: SecretVault) {
    self.store = store
    self.vault = vault
  }

  /// Runs until cancelled; resubscribes after a failure (it must never stop silently).
  func run() async {
    var next = store.log.headSeq + 1
    while !Task.isCancelled {
      do {
        for try await item in store.log.subscribe(from: next, filter: EventFilter(aggregateKind: "sandbox")) {
          guard case .record(let record) = item else { continue }
          next = record.seq + 1
          guard case .sandboxDeleted(let e)? = try? GatewayEvent.decode(record).kind else { continue }
          let keyID = SandboxEnvironmentSecrets.keyID(sandboxID: e.id)
          guard vault.hasDataKey(keyID) else { continue }
          do { try vault.destroyDataKey(keyID) } catch {
            logger.error("cannot destroy the environment key of deleted sandbox \(e.id) (retried at next start): \(error)")
          }
        }
      } catch is CancellationError {
        return
      } catch {
        logger.warning("sandbox event subscription failed, resubscribing: \(error)")
      }
      try? await Task.sleep(for: .milliseconds(200))
    }
  }
}
