import EventLog
import Foundation
import Gateway
import LogTools
import Projections
import Testing

@Suite struct SecretVaultTests {
  func tempDir() -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("vault-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
  }

  @Test func sealOpenAndFileModes() throws {
    let dir = tempDir()
    let vault = try SecretVault(directory: dir + "/keys")
    let key = try vault.createDataKey()
    let sealed = try vault.seal("sk-canary-123", keyID: key, name: "API_KEY")
    #expect(!String(decoding: sealed, as: UTF8.self).contains("sk-canary"))
    #expect(sealed.count == 12 + "sk-canary-123".utf8.count + 16)
    #expect(try vault.open(sealed, keyID: key, name: "API_KEY") == "sk-canary-123")
    // Bound to its credential name: moving it to another key name fails.
    #expect(throws: SecretVault.VaultError.self) { try vault.open(sealed, keyID: key, name: "OTHER") }
    let mode = try FileManager.default.attributesOfItem(atPath: dir + "/keys/master.key")[.posixPermissions] as? Int
    #expect(mode == 0o600)
    let dkMode = try FileManager.default.attributesOfItem(atPath: dir + "/keys/data/\(key).key")[.posixPermissions] as? Int
    #expect(dkMode == 0o600)
    // Reopening the vault reads the same master key.
    let again = try SecretVault(directory: dir + "/keys")
    #expect(try again.open(sealed, keyID: key, name: "API_KEY") == "sk-canary-123")
  }

  @Test func cryptoShreddingKeepsTheLogVerifiable() throws {
    let dir = tempDir()
    let vault = try SecretVault(directory: dir + "/keys")
    let key = try vault.createDataKey()
    let canary = "canary-\(UUID().uuidString)"
    let sealed = try vault.seal(canary, keyID: key, name: "TOKEN")
    let log = try EventLog.open(directory: dir + "/log")
    let created = GatewayEvent(
      .providerCreated(
        .with {
          $0.id = "p1"; $0.name = "github"; $0.workspace = "default"; $0.type = "github"; $0.dataKeyID = key
          $0.credentials = [
            .with {
              $0.key = "TOKEN"; $0.sealed = sealed
            }
          ]
        }))
    let deleted = GatewayEvent(
      .providerDeleted(
        .with {
          $0.id = "p1"; $0.name = "github"; $0.workspace = "default"
        }))
    try log.appendSync([created.newEvent(actor: "operator", requestID: "r1")])
    try vault.destroyDataKey(key)
    try log.appendSync([deleted.newEvent(actor: "operator", requestID: "r2")])
    #expect(!vault.hasDataKey(key))
    #expect(throws: SecretVault.VaultError.self) { try vault.open(sealed, keyID: key, name: "TOKEN") }
    #expect(try LogVerifier.verify(log).ok)
    // The past state still shows the provider, with its value sealed.
    let past = try StateLoader.replay(log, through: .seq(1))
    #expect(past.providers["p1"]?.credentials["TOKEN"] == sealed)
    log.close()
    // No file under the data dir holds the plaintext.
    let files = FileManager.default.enumerator(atPath: dir)?.compactMap { $0 as? String } ?? []
    for f in files {
      let data = FileManager.default.contents(atPath: dir + "/" + f) ?? Data()
      #expect(data.range(of: Data(canary.utf8)) == nil, "\(f) holds the secret")
    }
  }
}
