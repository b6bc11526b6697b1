import Crypto
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Envelope encryption for provider credentials, so that secrets enter the event log only sealed.
///
/// - The **master key** (256-bit, `keys/master.key`, mode 0600) lives in the gateway data directory
///   but outside the log directory, so a copied or exported log never carries it.
/// - Each provider has its own **data key** (256-bit), stored wrapped (AES-GCM under the master key)
///   in `keys/data/<key id>.key` (0600). Values are sealed with AES-GCM under the data key:
///   `sealed = nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)` (swift-crypto `AES.GCM.SealedBox.combined`).
///   The key id and the credential key name are bound as additional authenticated data, so a sealed
///   value cannot be moved to another provider or key.
/// - **Crypto-shredding**: `destroyDataKey` overwrites and deletes the wrapped data key. The events
///   that hold the sealed values stay in the log (the hash chain still verifies) but can never be
///   opened again.
public final class SecretVault: @unchecked Sendable {
  /// Errors: missing or damaged key files, a destroyed data key, or a value that fails authentication.
  public struct VaultError: Error, CustomStringConvertible, Sendable {
    /// One readable line naming the key or file; never a key or plaintext value.
    public let message: String
    /// The OS error when a file operation failed (e.g. `ENOSPC`).
    public var errno: Int32? = nil
    /// The message.
    public var description: String { message }
  }

  /// The vault directory: `master.key` and the wrapped data keys under `data/`.
  public let directory: String
  private let masterKey: SymmetricKey
  private let lock = NSLock()

  /// Opens (or creates) the vault in `directory` (e.g. `<data dir>/keys`).
  /// - Throws: `VaultError` if the master key file exists but is not a 32-byte key.
  public init(directory: String) throws {
    self.directory = directory
    let fm = FileManager.default
    try fm.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    try? fm.setAttributes([.posixPermissions: 0o700], ofItemAtPath: directory)
    let path = directory + "/master.key"
    if let data = fm.contents(atPath: path) {
      guard data.count == 32 else { throw VaultError(message: "master key \(path) is damaged (\(data.count) bytes, expected 32)") }
      masterKey = SymmetricKey(data: data)
    } else {
      let key = SymmetricKey(size: .bits256)
      try Self.writePrivate(key.withUnsafeBytes { Data($0) }, to: path)
      masterKey = key
    }
  }

  /// Creates a new data key and returns its id (`dk-<uuid>`).
  public func createDataKey() throws -> String {
    let id = "dk-" + RandomID.uuid()
    try createDataKey(id: id)
    return id
  }

  /// Creates a new data key under a caller-chosen id (`dk-` followed by letters, digits and `-`; e.g. a
  /// sandbox's environment key). A key that already exists is replaced: values sealed under it are lost.
  /// - Throws: `VaultError` for a malformed id or when the key file cannot be written.
  public func createDataKey(id: String) throws {
    guard id.hasPrefix("dk-"), id.count <= 100, id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else {
      throw VaultError(message: "malformed data key id \(id.debugDescription)")
    }
    let key = SymmetricKey(size: .bits256)
    let wrapped = try AES.GCM.seal(key.withUnsafeBytes { Data($0) }, using: masterKey, authenticating: Data(id.utf8))
    guard let combined = wrapped.combined else { throw VaultError(message: "cannot wrap data key") }
    try Self.writePrivate(combined, to: keyPath(id))
  }

  /// Seals `value` under the data key `keyID`, bound to the credential `name`.
  public func seal(_ value: String, keyID: String, name: String) throws -> Data {
    let key = try dataKey(keyID)
    guard let combined = try AES.GCM.seal(Data(value.utf8), using: key, authenticating: aad(keyID, name)).combined else {
      throw VaultError(message: "cannot seal credential \(name)")
    }
    return combined
  }

  /// Opens a sealed value. - Throws: `VaultError` when the key was destroyed or the value does not authenticate.
  public func open(_ sealed: Data, keyID: String, name: String) throws -> String {
    let key = try dataKey(keyID)
    do {
      let box = try AES.GCM.SealedBox(combined: sealed)
      return String(decoding: try AES.GCM.open(box, using: key, authenticating: aad(keyID, name)), as: UTF8.self)
    } catch {
      throw VaultError(message: "credential \(name) does not authenticate under data key \(keyID)")
    }
  }

  /// Crypto-shredding: overwrites and removes the wrapped data key. Idempotent.
  public func destroyDataKey(_ keyID: String) throws {
    lock.lock()
    defer { lock.unlock() }
    let path = keyPath(keyID)
    guard FileManager.default.fileExists(atPath: path) else { return }
    if let handle = FileHandle(forWritingAtPath: path) {
      let size = (try? handle.seekToEnd()) ?? 0
      try? handle.seek(toOffset: 0)
      try? handle.write(contentsOf: Data(repeating: 0, count: Int(size)))
      try? handle.synchronize()
      try? handle.close()
    }
    try FileManager.default.removeItem(atPath: path)
  }

  /// Re-wraps the data keys of another vault (e.g. the `keys/` directory of an archived data dir) under
  /// this vault's master key, so that a log restored from that archive opens its credentials here.
  /// Data keys this vault already has are left alone; the other vault is only read.
  /// - Returns: the ids imported.
  /// - Throws: `VaultError` when the other vault's master key is missing or damaged, or one of its data
  ///   keys does not unwrap under it.
  public func importDataKeys(fromVaultAt source: String) throws -> [String] {
    let fm = FileManager.default
    guard let masterData = fm.contents(atPath: source + "/master.key"), masterData.count == 32 else {
      throw VaultError(message: "\(source)/master.key is missing or damaged")
    }
    let sourceMaster = SymmetricKey(data: masterData)
    var imported: [String] = []
    let files = ((try? fm.contentsOfDirectory(atPath: source + "/data")) ?? []).sorted()
    for f in files where f.hasPrefix("dk-") && f.hasSuffix(".key") {
      let id = String(f.dropLast(4))
      guard !hasDataKey(id), let wrapped = fm.contents(atPath: "\(source)/data/\(f)") else { continue }
      let key: Data
      do {
        key = try AES.GCM.open(AES.GCM.SealedBox(combined: wrapped), using: sourceMaster, authenticating: Data(id.utf8))
      } catch {
        throw VaultError(message: "data key \(id) in \(source) does not unwrap under that vault's master key")
      }
      guard let rewrapped = try AES.GCM.seal(key, using: masterKey, authenticating: Data(id.utf8)).combined else {
        throw VaultError(message: "cannot wrap data key \(id)")
      }
      try Self.writePrivate(rewrapped, to: keyPath(id))
      imported.append(id)
    }
    return imported
  }

  /// Whether the data key still exists.
  public func hasDataKey(_ keyID: String) -> Bool { FileManager.default.fileExists(atPath: keyPath(keyID)) }

  private func dataKey(_ id: String) throws -> SymmetricKey {
    guard id.hasPrefix("dk-"), !id.contains("/"), let wrapped = FileManager.default.contents(atPath: keyPath(id)) else {
      throw VaultError(message: "data key \(id) does not exist (destroyed with its provider?)")
    }
    do {
      let box = try AES.GCM.SealedBox(combined: wrapped)
      return SymmetricKey(data: try AES.GCM.open(box, using: masterKey, authenticating: Data(id.utf8)))
    } catch {
      throw VaultError(message: "data key \(id) cannot be unwrapped with this gateway's master key")
    }
  }

  private func keyPath(_ id: String) -> String { "\(directory)/data/\(id).key" }
  private func aad(_ keyID: String, _ name: String) -> Data { Data("\(keyID)\u{0}\(name)".utf8) }

  /// Writes `data` to `path` with mode 0600 atomically (temp file + rename).
  /// Writes `data` to `path` (mode 0600) through a temporary file, fsync and rename: all or nothing; a failed
  /// write (e.g. `ENOSPC`) leaves no partial file. The error carries the errno.
  static func writePrivate(_ data: Data, to path: String) throws {
    let tmp = path + ".tmp-\(getpid())"
    func fail(_ what: String) -> VaultError {
      let e = errno
      unlink(tmp)
      return VaultError(message: "cannot \(what) \(path): \(String(cString: strerror(e)))", errno: e)
    }
    let fd = Glibc.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw fail("create") }
    var written = 0
    let ok = data.withUnsafeBytes { buf -> Bool in
      while written < buf.count {
        let n = write(fd, buf.baseAddress! + written, buf.count - written)
        if n < 0 { if errno == EINTR { continue }; return false }
        written += n
      }
      return fsync(fd) == 0
    }
    if !ok {
      let e = fail("write")
      close(fd)
      throw e
    }
    guard close(fd) == 0 else { throw fail("write") }
    guard rename(tmp, path) == 0 else { throw fail("write") }
  }
}
