import Crypto
import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// The SSH host key of one sandbox start (issue 11; OpenShell: enforcement-and-ssh.md §1.5, step 5 —
/// a fresh Ed25519 key at each start).
///
/// The gateway, not the sandbox, makes the key: the local driver makes it (``OpenSSHEd25519Key``, in
/// the files `ssh-keygen` writes) when it prepares a start and writes the pair into the sandbox's run directory (mounted read-only at
/// `/run/openshell`), the private half owned by the sandbox user (mode 0600) so that the sandbox's
/// `sshd` — which runs as that user, confined — can read it, and Landlock keeps every other workload
/// process away from it (`SandboxProtocol.sshHostKeyPath` is readable only in the SSH server's plan).
/// The gateway reads the public half back to answer `CreateSshSession.host_key_fingerprint`, so the
/// client pins a key the sandbox cannot choose.
enum SandboxSSHHostKey {
  static let privateName = "ssh_host_ed25519_key"
  static let publicName = "ssh_host_ed25519_key.pub"

  /// Generates a new Ed25519 pair in `directory` (replacing an old one).
  /// - Parameter owner: the sandbox user (nil when the gateway is not root: the key keeps our uid).
  /// - Throws: `SpawnError` when a file cannot be written or given to the sandbox user.
  static func generate(in directory: String, comment: String, owner: SandboxUser?) async throws {
    let path = directory + "/" + privateName
    unlink(path)
    unlink(path + ".pub")
    // Made in-process (OpenSSHEd25519Key), in the files `ssh-keygen -q -t ed25519 -N "" -C comment` writes.
    let key = OpenSSHEd25519Key(comment: comment)
    try FileWriting.write(path, key.privatePEM, mode: 0o600)
    try FileWriting.write(path + ".pub", key.publicLine, mode: 0o644)
    if let owner {
      guard chown(path, owner.uid, owner.gid) == 0 else { throw SpawnError("cannot give \(path) to the sandbox user: errno \(errno)") }
    }
  }

  /// The OpenSSH fingerprint (`SHA256:` + unpadded base64 of SHA-256 over the key blob) of the
  /// public key in `directory`, or nil when there is none or it does not parse.
  static func fingerprint(in directory: String) -> String? {
    guard let data = FileManager.default.contents(atPath: directory + "/" + publicName) else { return nil }
    return fingerprint(publicKeyLine: String(decoding: data, as: UTF8.self))
  }

  /// The fingerprint of an `authorized_keys`-style line (`ssh-ed25519 AAAA… comment`).
  static func fingerprint(publicKeyLine: String) -> String? {
    let fields = publicKeyLine.split(whereSeparator: { $0 == " " || $0 == "\n" })
    guard fields.count >= 2, let blob = Data(base64Encoded: String(fields[1])), !blob.isEmpty else { return nil }
    let digest = Data(SHA256.hash(data: blob)).base64EncodedString()
    return "SHA256:" + digest.replacingOccurrences(of: "=", with: "")
  }
}

extension LocalComputeDriver {
  /// The fingerprint of the running start's SSH host key of a sandbox, nil when it has none.
  func sshHostKeyFingerprint(sandboxID: String) -> String? {
    SandboxSSHHostKey.fingerprint(in: dir(sandboxID) + "/run")
  }
}
