import EventLog
import Foundation
import LogTools
import Logging
import Projections

/// Records refused calls (issue 12: authentication and authorisation outcomes) without letting a
/// flood fill the disk: refused RPCs (``AuditInterceptor``, ``BearerAuthInterceptor``) and clients refused
/// before any RPC, in the TLS handshake (``HandshakeRefusal``, RPC `tls-handshake`).
///
/// Aggregation rule: refusals are keyed by (identity, RPC, status code, reason). The first refusal of
/// a key opens a window of `window` (default 10 s); every refusal of that key inside the window only
/// increments a counter; when the window closes, exactly one `audit.access_refused` event is appended
/// with the count, the first and last times and the peer of the first call. A key refused again later
/// opens a new window. So a key produces at most one event per window, and the number of keys alive at
/// once is bounded by `maxKeys` (further distinct keys in the same window are counted under one
/// overflow key with reason "distinct refusals beyond the aggregation limit"). Open windows are flushed
/// at shutdown (``flush()``).
///
/// The identity in the key is never an unauthenticated claim: identities are authenticated ones,
/// `anonymous`, `unauthenticated` or `unverified` (``HandshakeRefusal``). What a refused client claims (a
/// certificate subject) and where it came from are samples of the window, each bounded: the first claim
/// (``ClaimedText``, ≤ 256 bytes) and peer, and the number of distinct claims and distinct peer addresses
/// (without port), counted exactly up to ``maxDistinct`` (sets of 64-bit hashes: ≤ ~33 KB per window at
/// the cap; at most `maxKeys` + 1 windows are open).
actor RefusalAggregator {
  private struct Key: Hashable {
    var identity: String
    var rpc: String
    var code: String
    var reason: String
  }
  private struct Window {
    var peer: String
    var count: UInt64
    var firstNs: Int64
    var lastNs: Int64
    /// ``ClaimedText`` sample of the first claimed subject ("" when none was claimed).
    var claimedSubject = ""
    /// Hashes of the distinct claimed subjects and peer addresses, at most ``maxDistinct`` each.
    var subjects: Set<Int> = []
    var peers: Set<Int> = []
  }
  /// Distinct subjects and peers counted per window; a record holding this number means "at least".
  static let maxDistinct = ClaimedText.countedDistinct

  private let log: EventLog
  let window: Duration
  let maxKeys: Int
  private var open: [Key: Window] = [:]
  private var flushTask: Task<Void, Never>?
  private let logger = Logger(label: "openshell.gateway.audit")

  init(log: EventLog, window: Duration = .seconds(10), maxKeys: Int = 1024) {
    self.log = log
    self.window = window
    self.maxKeys = maxKeys
  }

  /// Notes one refused call. Never throws and never waits for the disk: the event is written when its
  /// window closes.
  /// - Parameter claimedSubject: the subject an unverified client claimed (any length; only a
  ///   ``ClaimedText`` sample of the window's first claim and the number of distinct claims are kept).
  func refused(identity: String, peer: String, rpc: String, code: String, reason: String, claimedSubject: String? = nil) {
    let now = Int64(Date().timeIntervalSince1970 * 1e9)
    var key = Key(identity: identity, rpc: rpc, code: code, reason: String(reason.prefix(512)))
    if open[key] == nil, open.count >= maxKeys {
      key = Key(identity: "*", rpc: "*", code: code, reason: "distinct refusals beyond the aggregation limit")
    }
    let isNew = open[key] == nil
    var w = open[key] ?? Window(peer: peer, count: 0, firstNs: now, lastNs: now)
    w.count += 1
    w.lastNs = now
    if let claimedSubject {
      if w.subjects.isEmpty { w.claimedSubject = ClaimedText.sample(claimedSubject) }
      if w.subjects.count < Self.maxDistinct { w.subjects.insert(claimedSubject.hashValue) }
    }
    if w.peers.count < Self.maxDistinct { w.peers.insert(Self.address(peer).hashValue) }
    open[key] = w
    if isNew { scheduleClose(key) }
  }

  /// A peer without its port: `ipv4:10.0.0.1:5555` → `ipv4:10.0.0.1`, `ipv6:[::1]:5555` → `ipv6:[::1]`;
  /// anything else as it is.
  static func address(_ peer: String) -> Substring {
    guard peer.hasPrefix("ipv4:") || peer.hasPrefix("ipv6:"), let colon = peer.lastIndex(of: ":"),
      peer.index(after: colon) < peer.endIndex, peer[peer.index(after: colon)...].allSatisfy(\.isNumber),
      colon > peer.index(peer.startIndex, offsetBy: 4)
    else { return Substring(peer) }
    return peer[..<colon]
  }

  private func scheduleClose(_ key: Key) {
    let window = self.window
    Task { [weak self] in
      try? await Task.sleep(for: window)
      await self?.close(key)
    }
  }

  private func close(_ key: Key) async {
    guard let w = open.removeValue(forKey: key) else { return }
    await append([(key, w)])
  }

  /// Writes every open window now (at shutdown); returns when they are durable.
  func flush() async {
    // Oldest window first.
    let pending = open.sorted { $0.value.firstNs < $1.value.firstNs }.map { ($0.key, $0.value) }
    open.removeAll()
    await append(pending)
  }

  private func append(_ windows: [(Key, Window)]) async {
    guard !windows.isEmpty else { return }
    let events = windows.map { key, w in
      GatewayEvent(
        .accessRefused(
          .with {
            $0.identity = key.identity
            $0.peer = w.peer
            $0.rpc = key.rpc
            $0.code = key.code
            $0.reason = key.reason
            $0.count = w.count
            $0.firstNs = w.firstNs
            $0.lastNs = w.lastNs
            $0.claimedSubject = w.claimedSubject
            $0.distinctSubjects = UInt64(w.subjects.count)
            $0.distinctPeers = UInt64(w.peers.count)
          })
      ).newEvent(actor: key.identity, requestID: "")
    }
    do {
      _ = try await log.append(events)
    } catch {
      logger.warning("\(windows.count) refusal record(s) not written: \(error)")
    }
  }

  /// Number of open windows (for tests and metrics).
  var openWindows: Int { open.count }
}
