import Foundation
import Synchronization

/// A change to providers that may alter the environment of running sandboxes. Carries names and ids
/// only, never a credential value: subscribers resolve the new environment themselves
/// (`ProviderEnvironmentResolver`), through the vault.
public struct ProviderChange: Sendable, Equatable {
  public enum Kind: String, Sendable {
    case created, updated, rotated, deleted, attached, detached
  }

  public var kind: Kind
  public var providerID: String
  /// Provider name and workspace.
  public var provider: String
  public var workspace: String
  /// Credential keys whose values changed (names only).
  public var credentialKeys: [String]
  /// Sandboxes whose provider environment changed (those that use the provider after the change,
  /// plus those it was detached from).
  public var sandboxIDs: [String]
  /// The last seq of the command's events.
  public var seq: UInt64

  public init(kind: Kind, providerID: String, provider: String, workspace: String, credentialKeys: [String], sandboxIDs: [String], seq: UInt64) {
    self.kind = kind
    self.providerID = providerID
    self.provider = provider
    self.workspace = workspace
    self.credentialKeys = credentialKeys
    self.sandboxIDs = sandboxIDs
    self.seq = seq
  }
}

/// Broadcasts ``ProviderChange``s to any number of subscribers (the supervisor delivery reactor, tests).
/// Publishing never blocks: each subscriber has an unbounded buffer.
public final class ProviderEvents: Sendable {
  private let subscribers = Mutex<[UUID: AsyncStream<ProviderChange>.Continuation]>([:])

  public init() {}

  /// A stream of every change published after this call; it ends when the consumer stops iterating.
  public func subscribe() -> AsyncStream<ProviderChange> {
    let (stream, continuation) = AsyncStream<ProviderChange>.makeStream()
    let id = RandomID.make()
    subscribers.withLock { $0[id] = continuation }
    continuation.onTermination = { [weak self] _ in self?.subscribers.withLock { _ = $0.removeValue(forKey: id) } }
    return stream
  }

  public func publish(_ change: ProviderChange) {
    for c in subscribers.withLock({ Array($0.values) }) { c.yield(change) }
  }

  /// Number of live subscribers.
  public var subscriberCount: Int { subscribers.withLock { $0.count } }
}
