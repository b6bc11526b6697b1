import Crypto
import Foundation

/// An Ed25519 key pair in OpenSSH's own file formats, as `ssh-keygen -t ed25519 -N ""` writes them: the
/// private key as an unencrypted `openssh-key-v1` PEM block (OpenSSH's PROTOCOL.key), the public key as one
/// `ssh-ed25519 BASE64 comment` line.
///
/// Why not `ssh-keygen` (issue 14, CreateSandbox → READY): a process start per sandbox start was ~5 ms of
/// it; the key is made by swift-crypto here and only written in OpenSSH's layout (no library in the
/// project's set writes that layout). `SandboxSSHHostKeyTests` checks the files with the real
/// `ssh-keygen -y` and the sandbox's sshd loads them.
struct OpenSSHEd25519Key {
  let privateKey: Curve25519.Signing.PrivateKey
  let comment: String

  /// A new random key pair.
  init(comment: String) {
    privateKey = Curve25519.Signing.PrivateKey()
    self.comment = comment
  }

  /// The public key's wire blob: string "ssh-ed25519", string key (32 bytes).
  var publicBlob: [UInt8] {
    var b: [UInt8] = []
    Self.appendString(&b, Array("ssh-ed25519".utf8))
    Self.appendString(&b, Array(privateKey.publicKey.rawRepresentation))
    return b
  }

  /// `ssh-ed25519 BASE64 comment\n`, the `.pub` file.
  var publicLine: String {
    "ssh-ed25519 " + Data(publicBlob).base64EncodedString() + (comment.isEmpty ? "" : " " + comment) + "\n"
  }

  /// The private key file: `-----BEGIN OPENSSH PRIVATE KEY-----`, the base64 of the `openssh-key-v1`
  /// structure (cipher and KDF "none", one key) in lines of 70 characters, `-----END …-----`.
  var privatePEM: String {
    let seed = Array(privateKey.rawRepresentation)
    let pub = Array(privateKey.publicKey.rawRepresentation)
    var inner: [UInt8] = []
    // Two equal check integers: a reader compares them to detect a wrong passphrase.
    var check: UInt32 = 0
    withUnsafeMutableBytes(of: &check) { for i in $0.indices { $0[i] = UInt8.random(in: 0...255) } }
    Self.appendUInt32(&inner, check)
    Self.appendUInt32(&inner, check)
    Self.appendString(&inner, Array("ssh-ed25519".utf8))
    Self.appendString(&inner, pub)
    Self.appendString(&inner, seed + pub)  // OpenSSH keeps the 64-byte form: seed, then public key
    Self.appendString(&inner, Array(comment.utf8))
    var pad: UInt8 = 1
    while inner.count % 8 != 0 {  // block size 8 for cipher "none"
      inner.append(pad)
      pad += 1
    }
    var outer = Array("openssh-key-v1".utf8) + [0]
    Self.appendString(&outer, Array("none".utf8))  // cipher
    Self.appendString(&outer, Array("none".utf8))  // KDF
    Self.appendString(&outer, [])  // KDF options
    Self.appendUInt32(&outer, 1)  // number of keys
    Self.appendString(&outer, publicBlob)
    Self.appendString(&outer, inner)
    let base64 = Array(Data(outer).base64EncodedString())
    var text = "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    var i = 0
    while i < base64.count {
      text += String(base64[i..<min(i + 70, base64.count)]) + "\n"
      i += 70
    }
    return text + "-----END OPENSSH PRIVATE KEY-----\n"
  }

  static func appendUInt32(_ b: inout [UInt8], _ v: UInt32) {
    b += [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
  }

  static func appendString(_ b: inout [UInt8], _ s: [UInt8]) {
    appendUInt32(&b, UInt32(s.count))
    b += s
  }
}
