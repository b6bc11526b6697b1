import Crypto
import EventLog
import Foundation
import LogTools
import Logging
import Projections

/// The reactor that signs checkpoints of the log (issue 12; format and threat model:
/// `LogTools.CheckpointSignature`).
///
/// At start, every `interval` records, and once more at shutdown, it signs the chain hash of the head record
/// with the gateway's Ed25519 checkpoint key and appends an `audit.checkpoint` event (actor `system`,
/// no request id). Signing never blocks a command: it runs beside the server and appends like any
/// reactor, after the records it vouches for are durable.
actor CheckpointSigner {
  private let store: GatewayStore
  private let key: Curve25519.Signing.PrivateKey
  /// Records between checkpoints (at least 1).
  let interval: UInt64
  private var lastCovered: UInt64 = 0
  private let logger = Logger(label: "openshell.gateway.audit")

  init(store: GatewayStore, key: Curve25519.Signing.PrivateKey, interval: UInt64) {
    self.store = store
    self.key = key
    self.interval = max(1, interval)
  }

  /// Signs whenever `interval` records (the start-up checkpoint is signed by `serve` before it listens) have been appended since the last checkpoint; polls the head seq
  /// every `poll` (a cheap read of the log's head) until cancelled.
  func run(poll: Duration = .milliseconds(500)) async {
    while !Task.isCancelled {
      if store.log.headSeq >= lastCovered + interval { await signHead() }
      try? await Task.sleep(for: poll)
    }
  }

  /// Appends a checkpoint for the current head unless the head already is a checkpoint.
  /// Failures (disk full, a closed log) are logged: the records stay; only their signature is missing.
  func signHead() async {
    let log = store.log
    do {
      let head = log.headSeq
      guard head > 0, let record = try log.record(at: head), record.type != "audit.checkpoint" else { return }
      let event = try CheckpointSignature.checkpoint(seq: head, chainHash: record.hash, key: key)
      _ = try await log.append([event.newEvent(actor: "system", requestID: "")])
      lastCovered = head
      try await store.catchUp()
    } catch {
      logger.warning("audit checkpoint not written: \(error)")
    }
  }
}

/// The gateway's checkpoint signing key: raw 32-byte Ed25519 private key in a 0600 file outside the log
/// directory (default `DATA/keys/audit-checkpoint.key`), and its public key in PEM beside it
/// (`audit-checkpoint.pub.pem`) for `openshell-replay verify --public-key`. Copy the public key off the
/// host: a verifier must not take it from the directory it is checking.
enum CheckpointKey {
  /// Loads the key, creating it (and the public PEM) on first use.
  /// - Throws: ``CheckpointKeyError`` naming the file when it exists but is not a 32-byte key, or
  ///   `VaultError` when it cannot be written.
  static func loadOrCreate(path: String) throws -> Curve25519.Signing.PrivateKey {
    let fm = FileManager.default
    if let data = fm.contents(atPath: path) {
      guard let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: data) else {
        throw CheckpointKeyError("\(path) is not a 32-byte Ed25519 private key; move it away to create a new one")
      }
      try writePublic(key, next: path)
      return key
    }
    let dir = (path as NSString).deletingLastPathComponent
    try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let key = Curve25519.Signing.PrivateKey()
    try SecretVault.writePrivate(key.rawRepresentation, to: path)
    try writePublic(key, next: path)
    return key
  }

  /// Path of the public PEM that belongs to the private key at `path`.
  static func publicPath(for path: String) -> String {
    (path.hasSuffix(".key") ? String(path.dropLast(4)) : path) + ".pub.pem"
  }

  private static func writePublic(_ key: Curve25519.Signing.PrivateKey, next path: String) throws {
    let pem = try CheckpointSignature.pem(key.publicKey)
    let pub = publicPath(for: path)
    if (try? String(contentsOfFile: pub, encoding: .utf8)) == pem { return }
    try Data(pem.utf8).write(to: URL(fileURLWithPath: pub), options: .atomic)
  }
}
