import EventLog
import Foundation
import Logging
import Projections

/// A change to providers that may alter the environment of running sandboxes, derived from one log record.
/// Carries names and ids only, never a credential value: consumers resolve the new environment themselves
/// (``ProviderEnvironmentResolver``), through the vault.
public struct ProviderChange: Sendable, Equatable {
  /// Which record it came from: `provider.created`, `provider.updated`, `provider.credential_rotated`,
  /// `provider.deleted`, `sandbox.provider_attached` or `sandbox.provider_detached`.
  public enum Kind: String, Sendable {
    case created, updated, rotated, deleted, attached, detached
  }

  /// The kind of record.
  public var kind: Kind
  /// Id of the provider concerned.
  public var providerID: String
  /// Provider name and workspace.
  public var provider: String
  /// Workspace of the provider.
  public var workspace: String
  /// Sandboxes whose provider environment changed: those that use the provider now, or the one a
  /// provider was attached to or detached from. Empty for `deleted` (its detachments are records of their own).
  public var sandboxIDs: [String]
  /// The record's seq.
  public var seq: UInt64
}

/// Provider changes follow the log, not an in-memory bus (issue 16: a crash between a command's append and
/// its publication lost the push). Each consumer — the delivery to supervisors, the inference bundle
/// republisher — follows the log from its own checkpoint (``follow(store:checkpoint:handle:)``), so after a
/// crash it resumes with the records it had not handled, at least once: its handling is idempotent (it sends
/// the full current environment, or republishes only when the bundle changed).
public enum ProviderChangeFeed {
  /// The record types that change a sandbox's provider environment.
  public static let types: Set<String> = GatewayState.providerChangeTypes

  /// The change `record` stands for, its sandboxes resolved against `state` (the projection at or after the
  /// record: consumers act on the current state anyway). nil for other records or undecodable payloads.
  public static func change(_ record: EventRecord, state: GatewayState) -> ProviderChange? {
    guard types.contains(record.type), let kind = try? GatewayEvent.decode(record).kind else { return nil }
    func users(_ p: ProviderRecord) -> [String] {
      ProviderEnvironmentResolver.users(of: p.name, workspace: p.workspace, in: state).map(\.id)
    }
    func provider(_ id: String, _ kind: ProviderChange.Kind) -> ProviderChange? {
      guard let p = state.providers[id] else { return nil }  // deleted since: its detachments follow
      return ProviderChange(kind: kind, providerID: id, provider: p.name, workspace: p.workspace, sandboxIDs: users(p), seq: record.seq)
    }
    func attachment(_ sandboxID: String, _ name: String, _ kind: ProviderChange.Kind) -> ProviderChange? {
      let workspace = state.sandboxes[sandboxID]?.workspace ?? ""
      let id = state.provider(named: name, workspace: workspace)?.id ?? ""
      return ProviderChange(kind: kind, providerID: id, provider: name, workspace: workspace, sandboxIDs: [sandboxID], seq: record.seq)
    }
    switch kind {
    case .providerCreated(let e): return provider(e.id, .created)
    case .providerUpdated(let e): return provider(e.id, .updated)
    case .providerCredentialRotated(let e): return provider(e.id, .rotated)
    case .providerDeleted(let e):
      return ProviderChange(kind: .deleted, providerID: e.id, provider: e.name, workspace: e.workspace, sandboxIDs: [], seq: record.seq)
    case .sandboxProviderAttached(let e): return attachment(e.sandboxID, e.provider, .attached)
    case .sandboxProviderDetached(let e): return attachment(e.sandboxID, e.provider, .detached)
    default: return nil
    }
  }

  /// Where a consumer with checkpoint `saved` resumes, given the projection `state`: `from` is the first seq
  /// to read, `save` a checkpoint to store first (nil = keep). Nothing pending (`saved` ≥ the state's
  /// ``GatewayState/providerChangeSeq``, the newest provider change it has applied) → the record after the
  /// state's `lastSeq`, and the checkpoint moves there: a restart no longer reads the whole log from a
  /// checkpoint that only provider changes move (issue 14: 4.8 s on a 1M-event log). A change not handled
  /// yet (a crash between its append and its handling) → the record after `saved`, so it is not skipped.
  /// First start (no checkpoint) → after `lastSeq`, saved there.
  public static func resumePoint(saved: UInt64?, state: GatewayState) -> (from: UInt64, save: UInt64?) {
    guard let saved else { return (state.lastSeq + 1, state.lastSeq) }
    if saved >= state.providerChangeSeq, saved < state.lastSeq { return (state.lastSeq + 1, state.lastSeq) }
    return (saved + 1, nil)
  }

  /// Follows the log from checkpoint `checkpoint` (see ``resumePoint(saved:state:)``), calling `handle` for
  /// every provider change in seq order, until cancelled. The checkpoint is saved after each handled record
  /// (provider changes are rare); a subscription failure resubscribes (never stops silently).
  public static func follow(store: GatewayStore, checkpoint: String, handle: @Sendable (ProviderChange) async -> Void) async {
    let logger = Logger(label: "openshell.gateway.providers.feed")
    let log = store.log
    try? await store.catchUp()
    let start = resumePoint(saved: (try? log.checkpoint(checkpoint)) ?? nil, state: await store.state)
    var next = start.from
    if let seq = start.save {
      do { try log.setCheckpoint(checkpoint, seq: seq) } catch {
        logger.warning("checkpoint \(checkpoint) not moved to seq \(seq): \(error)")
      }
    }
    while !Task.isCancelled {
      do {
        for try await item in log.subscribe(from: next, filter: EventFilter(types: types)) {
          guard case .record(let record) = item else { continue }
          try? await store.catchUp()
          if let change = change(record, state: await store.state) { await handle(change) }
          next = record.seq + 1
          do { try log.setCheckpoint(checkpoint, seq: record.seq) } catch {
            logger.warning("checkpoint \(checkpoint) not saved at seq \(record.seq) (handled again after a restart): \(error)")
          }
        }
      } catch is CancellationError {
        return
      } catch {
        logger.warning("provider change subscription failed, resubscribing: \(error)")
      }
      try? await Task.sleep(for: .milliseconds(200))
    }
  }
}
