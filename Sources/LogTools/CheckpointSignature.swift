import Crypto
import EventLog
import Foundation
import Projections
import X509

/// Signed checkpoints of the event log (issue 12: tamper evidence).
///
/// Every N records and at shutdown the gateway signs, with an Ed25519 key kept outside the log
/// directory, the statement "record `seq` has chain hash `H`" and appends it as an `audit.checkpoint`
/// event. Because each record's chain hash covers its own bytes and the previous hash, one valid
/// signature over `(seq, H)` vouches for every record from 1 to `seq`.
///
/// Threat model — what `openshell-replay verify --public-key` detects, given a public key the
/// verifier obtained out of band (not from the data directory under suspicion):
/// - a record at or below a checkpoint's seq edited, removed, inserted or re-ordered, even when the
///   attacker re-computed every checksum and chain hash (a "rewritten chain"): the signed hash no
///   longer matches the record at `seq`;
/// - a forged or altered checkpoint (signature check) and checkpoints signed by another key;
/// - a log without any valid checkpoint when one is required (`verify` fails).
///
/// - records after the newest checkpoint, when `verify` is not told to accept them (`--allow-unsigned-tail`):
///   a stopped gateway's log ends with its shutdown checkpoint, and a start signs the head first, so an
///   unsigned tail means a live or crashed gateway — or that the newest checkpoints were removed.
///
/// What it cannot detect: changes in an accepted unsigned tail; truncation of the log back to an earlier checkpoint
/// (compare the newest covered seq with one you recorded, e.g. from `openshell audit verify`); and
/// anything done by someone who holds the private key — root on the gateway host can read it, so
/// keep a copy of the public key and of recent checkpoint seqs off the host.
public enum CheckpointSignature {
  /// Domain-separation prefix of the signed message; the version changes if the layout does.
  static let domain = Array("openshell.audit.checkpoint.v1\u{0}".utf8)

  /// The signed bytes: `domain ‖ seq (8 bytes, big-endian) ‖ chain hash (32 bytes)`.
  public static func message(seq: UInt64, chainHash: [UInt8]) -> [UInt8] {
    var m = domain
    withUnsafeBytes(of: seq.bigEndian) { m.append(contentsOf: $0) }
    m.append(contentsOf: chainHash)
    return m
  }

  /// Lowercase hex SHA-256 of the raw 32-byte public key: names the key in each checkpoint.
  public static func keyID(_ key: Curve25519.Signing.PublicKey) -> String {
    hexString(SHA256.hash(data: key.rawRepresentation))
  }

  /// Builds the checkpoint event for record `seq` whose chain hash is `chainHash`.
  /// - Throws: `CryptoKitError` if signing fails.
  public static func checkpoint(seq: UInt64, chainHash: [UInt8], key: Curve25519.Signing.PrivateKey) throws -> GatewayEvent {
    let signature = try key.signature(for: message(seq: seq, chainHash: chainHash))
    return GatewayEvent(
      .auditCheckpoint(
        .with {
          $0.coversSeq = seq
          $0.chainHash = Data(chainHash)
          $0.signature = Data(signature)
          $0.keySha256 = keyID(key.publicKey)
        }))
  }

  /// Reads an Ed25519 public key from a PEM file (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo,
  /// as `openssl pkey -pubout` writes it).
  /// - Throws: ``CheckpointKeyError`` naming the file when it is missing, not PEM, or not Ed25519.
  public static func loadPublicKey(path: String) throws -> Curve25519.Signing.PublicKey {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
      throw CheckpointKeyError("cannot read public key file \(path)")
    }
    let spki: Certificate.PublicKey
    do {
      spki = try Certificate.PublicKey(pemEncoded: text)
    } catch {
      throw CheckpointKeyError("\(path) is not a PEM public key (expected -----BEGIN PUBLIC KEY-----)")
    }
    guard let key = Curve25519.Signing.PublicKey(spki) else {
      throw CheckpointKeyError("\(path) is not an Ed25519 public key")
    }
    return key
  }

  /// PEM (SubjectPublicKeyInfo) text of an Ed25519 public key, readable by `openssl pkey -pubin`.
  public static func pem(_ key: Curve25519.Signing.PublicKey) throws -> String {
    try Certificate.PublicKey(key).serializeAsPEM().pemString + "\n"
  }
}

/// A checkpoint key that cannot be used; the message names the file and the problem.
public struct CheckpointKeyError: Error, CustomStringConvertible, Sendable {
  /// What is wrong, naming the key file.
  public let description: String
  /// An error with this description.
  public init(_ description: String) { self.description = description }
}
