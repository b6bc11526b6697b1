import Foundation
import Projections

/// Crypto-shredding leftovers: data keys that nothing live references — a provider's key after a crash
/// between `provider.deleted` and the key's destruction, a sandbox's environment key after a crash between
/// `sandbox.deleted` and its shredding, or a key made for a create whose event was never appended. Run at
/// start-up, before the gateway serves (no create is in flight then).
enum DataKeyJanitor {
  /// - Returns: the key ids destroyed.
  @discardableResult
  static func shredOrphans(vault: SecretVault, state: GatewayState) -> [String] {
    var live = Set(state.providers.values.map(\.dataKeyID))
    for s in state.sandboxes.values { if let k = s.sealedEnvironment?.keyID { live.insert(k) } }
    let files = (try? FileManager.default.contentsOfDirectory(atPath: vault.directory + "/data")) ?? []
    var destroyed: [String] = []
    for f in files where f.hasPrefix("dk-") && f.hasSuffix(".key") {
      let id = String(f.dropLast(4))
      guard !live.contains(id) else { continue }
      if (try? vault.destroyDataKey(id)) != nil { destroyed.append(id) }
    }
    return destroyed
  }
}
