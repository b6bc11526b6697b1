// Checks and helpers shared by the provider RPCs: map limits, credential/config/type validation, sealing
// of credential values, and the redacted wire form of a provider.

import Foundation
import GRPCCore
import OpenShellAPI
import Projections

extension OpenShellService {
  /// Limits on a provider's maps.
  enum ProviderLimits {
    static let maxEntries = 64
    /// Bytes of UTF-8 of a credential or config key.
    static let maxKeyLength = 256
    static let maxCredentialValueBytes = 16 * 1024
    static let maxConfigValueBytes = 4 * 1024
    static let maxTypeLength = 63
  }

  func requireVault(_ rpc: String) throws -> SecretVault {
    guard let vault else { throw RPCErrors.failedPrecondition("\(rpc): this gateway has no secret vault configured") }
    return vault
  }

  /// Checks a credentials map. Messages name keys, never values.
  func checkCredentials(_ map: [String: String], field: String, update: Bool) throws {
    if map.count > ProviderLimits.maxEntries { throw RPCErrors.invalidArgument(field: field, "at most \(ProviderLimits.maxEntries) credentials") }
    for (k, v) in map {
      guard ProviderCatalog.isEnvironmentName(k), k.utf8.count <= ProviderLimits.maxKeyLength else {
        throw RPCErrors.invalidArgument(
          field: field, "credential key \(k.debugDescription) must match [A-Za-z_][A-Za-z0-9_]* and be at most \(ProviderLimits.maxKeyLength) bytes")
      }
      if v.isEmpty && !update { throw RPCErrors.invalidArgument(field: field, "credential \(k) has an empty value") }
      if v.utf8.count > ProviderLimits.maxCredentialValueBytes {
        throw RPCErrors.invalidArgument(field: field, "credential \(k) is longer than \(ProviderLimits.maxCredentialValueBytes) bytes")
      }
    }
  }

  func checkConfig(_ map: [String: String], field: String) throws {
    if map.count > ProviderLimits.maxEntries { throw RPCErrors.invalidArgument(field: field, "at most \(ProviderLimits.maxEntries) config entries") }
    for (k, v) in map {
      // The limit counts bytes of UTF-8 (200 × 'ü' is 400 bytes): the message says so and gives the count.
      if k.isEmpty || k.utf8.count > ProviderLimits.maxKeyLength {
        throw RPCErrors.invalidArgument(
          field: field, "config key \(k.debugDescription) must be 1-\(ProviderLimits.maxKeyLength) bytes of UTF-8 (it is \(k.utf8.count) bytes)")
      }
      if k.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
        throw RPCErrors.invalidArgument(field: field, "config key \(k.debugDescription) contains control characters")
      }
      if v.utf8.count > ProviderLimits.maxConfigValueBytes {
        throw RPCErrors.invalidArgument(field: field, "config value of \(k) is longer than \(ProviderLimits.maxConfigValueBytes) bytes")
      }
    }
  }

  /// The canonical type: known names and aliases case-insensitively, other syntactically valid names as given.
  func providerType(_ raw: String) throws -> String {
    if raw.isEmpty { throw RPCErrors.invalidArgument(field: "provider.type", "is required") }
    if let t = ProviderCatalog.normalize(raw) { return t }
    let ok =
      raw.utf8.count <= ProviderLimits.maxTypeLength
      && raw.unicodeScalars.allSatisfy {
        $0.isASCII && (CharacterSet.lowercaseLetters.contains($0) || CharacterSet.decimalDigits.contains($0) || "-_.".unicodeScalars.contains($0))
      }
    guard ok else {
      throw RPCErrors.invalidArgument(
        field: "provider.type", "unknown provider type \(raw.debugDescription); known types: \(ProviderCatalog.types.joined(separator: ", "))")
    }
    return raw
  }

  static func randomProviderName() -> String {
    String((0..<6).map { _ in "abcdefghijklmnopqrstuvwxyz".randomElement()! })
  }

  func sealAll(_ vault: SecretVault, _ pairs: [(String, String)], keyID: String) throws -> [Openshell_Events_V1_SealedValue] {
    try pairs.map { k, v in
      let sealed: Data
      do { sealed = try vault.seal(v, keyID: keyID, name: k) } catch {
        throw RPCError(code: .internalError, message: "credential \(k) could not be sealed")
      }
      return .with {
        $0.key = k; $0.sealed = sealed
      }
    }
  }

  /// Provider labels are not stored (the provider events have no labels yet), so a request that sets
  /// them is refused rather than answered OK with the labels dropped (issue 16). A label selector on
  /// ListProviders matches providers as label-less.
  /// - Throws: INVALID_ARGUMENT naming `provider.metadata.labels`.
  static func refuseLabels(_ p: Openshell_Datamodel_V1_Provider) throws {
    guard !p.metadata.labels.isEmpty else { return }
    throw RPCErrors.invalidArgument(
      field: "provider.metadata.labels",
      "provider labels are not supported yet (got \(p.metadata.labels.keys.sorted().joined(separator: ", "))); create the provider without labels")
  }
}

extension Wire {
  /// A provider as every response but GetProviderCredentials shows it: values `REDACTED`.
  static func provider(_ p: ProviderRecord) -> Openshell_Datamodel_V1_Provider {
    var out = Openshell_Datamodel_V1_Provider()
    out.metadata.id = p.id
    out.metadata.name = p.name
    out.metadata.workspace = p.workspace
    out.metadata.createdTime = timestamp(ns: p.createdNs)
    out.metadata.resourceVersion = p.resourceVersion
    out.type = p.type
    out.credentials = Dictionary(uniqueKeysWithValues: p.credentials.keys.map { ($0, ProviderCatalog.redacted) })
    out.config = p.config
    return out
  }
}
