import Foundation
import NIOCore
import OpenShellAPI
import Synchronization

/// The network policy the proxy enforces, as generations (enforcement-and-ssh.md §1.4, rows "Decision
/// engine" and "Hot reload"):
///
/// - ``install(_:label:)`` swaps in a validated policy atomically and bumps the generation; every
///   connection is decided against the one generation it read. ``ConfigAgent`` calls it before it
///   reports the revision LOADED, so `policy set --wait` returns only once the proxy enforces it.
/// - Open connections are registered; after a swap each is re-decided against the new generation and
///   closed (both sides) when it is no longer allowed.
/// - Until a first valid policy is installed, the generation is 0 with no policy: everything is denied
///   (fail closed). A revision that fails validation never reaches here, so the last good one stays.
final class ProxyPolicy: Sendable {
  struct Snapshot: Sendable {
    var generation: UInt64
    var policy: Openshell_Sandbox_V1_SandboxPolicy?
    var label: String
  }

  /// An open, allowed connection (for re-decision on swaps).
  struct OpenConnection: Sendable {
    var host: String
    var port: Int
    var binary: CallerBinary
    var addresses: [IPAddress]
    var channels: [Channel]
    /// Ends a connection that is not (or no longer) a NIO channel: a splice relay (``SpliceRelay``).
    var cancel: (@Sendable () -> Void)? = nil
  }

  private let current = Mutex(Snapshot(generation: 0, policy: nil, label: "none"))
  private let open = Mutex<[UInt64: OpenConnection]>([:])
  private let nextID = Atomic<UInt64>(1)
  /// Called for each open connection closed by a swap (host, port, binary, reason).
  let onRevoked: @Sendable (OpenConnection, String) -> Void

  init(onRevoked: @escaping @Sendable (OpenConnection, String) -> Void) { self.onRevoked = onRevoked }

  var snapshot: Snapshot { current.withLock { $0 } }

  /// Installs a validated policy; returns the new generation.
  @discardableResult
  func install(_ policy: Openshell_Sandbox_V1_SandboxPolicy, label: String) -> UInt64 {
    let snap = current.withLock { s -> Snapshot in
      s = Snapshot(generation: s.generation + 1, policy: policy, label: label)
      return s
    }
    revalidate(snap)
    return snap.generation
  }

  /// Decides one request against the current generation.
  func decide(host: String, port: Int, binary: CallerBinary?) -> (Snapshot, NetworkVerdict) {
    let snap = snapshot
    return (snap, NetworkDecision.decide(snap.policy, host: host, port: port, binary: binary))
  }

  /// Registers an allowed connection; returns its id (for ``closed(_:)``). When a swap happened since
  /// it was decided (`generation` is stale), it is re-decided at once.
  func opened(_ c: OpenConnection, generation: UInt64) -> UInt64 {
    let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
    open.withLock { $0[id] = c }
    let snap = snapshot
    if snap.generation != generation, let why = stillDenied(c, snap) {
      open.withLock { _ = $0.removeValue(forKey: id) }
      close(c, why)
    }
    return id
  }

  func closed(_ id: UInt64) { open.withLock { _ = $0.removeValue(forKey: id) } }

  var openCount: Int { open.withLock { $0.count } }

  private func revalidate(_ snap: Snapshot) {
    let all = open.withLock { $0 }
    for (id, c) in all {
      guard let why = stillDenied(c, snap) else { continue }
      open.withLock { _ = $0.removeValue(forKey: id) }
      close(c, why)
    }
  }

  /// Why `c` is not allowed under `snap` any more, nil when it still is.
  private func stillDenied(_ c: OpenConnection, _ snap: Snapshot) -> String? {
    switch NetworkDecision.decide(snap.policy, host: c.host, port: c.port, binary: c.binary) {
    case .deny(let reason): return "\(snap.label): \(reason)"
    case .allow(_, let allowedIPs, _):
      if case .failure(let e) = AddressGuard.check(c.addresses, allowedIPs: allowedIPs) { return "\(snap.label): \(e.message)" }
      return nil
    }
  }

  private func close(_ c: OpenConnection, _ why: String) {
    for ch in c.channels { ch.close(promise: nil) }
    c.cancel?()
    onRevoked(c, why)
  }
}
