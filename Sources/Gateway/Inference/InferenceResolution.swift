// Resolution of inference routes against the current providers (base URL, protocols, API key), the
// bundle revision and its publication event, and the bundle handed to sandboxes.

import Crypto
import Foundation
import GRPCCore
import OpenShellAPI
import Projections

extension InferenceService {
  struct Resolved {
    var name: String
    var baseURL: String
    var protocols: [String]
    var providerType: String
    var model: String
    var timeout: UInt32
    var keyName: String
    var sealedKey: Data
    var provider: ProviderRecord
  }

  static func routeName(_ given: String) throws -> String {
    switch given {
    case "", userRoute: return userRoute
    case systemRoute: return systemRoute
    default:
      throw RPCErrors.invalidArgument(field: "route_name", "unknown route '\(given)' (expected '\(userRoute)' or '\(systemRoute)')")
    }
  }

  static func baseURL(_ p: ProviderRecord) -> String {
    let (key, fallback): (String, String) =
      switch p.type {
      case "anthropic": ("ANTHROPIC_BASE_URL", "https://api.anthropic.com/v1")
      case "nvidia": ("NVIDIA_BASE_URL", "https://integrate.api.nvidia.com/v1")
      default: ("OPENAI_BASE_URL", "https://api.openai.com/v1")
      }
    let configured = (p.config[key] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    let url = configured.isEmpty ? fallback : configured
    return url.hasSuffix("/") ? String(url.dropLast()) : url
  }

  static func protocols(_ type: String) -> [String] {
    type == "anthropic"
      ? ["anthropic_messages", "model_discovery"]
      : ["openai_chat_completions", "openai_completions", "openai_responses", "model_discovery"]
  }

  /// The credential that holds the API key, per supported provider type (the one table of them).
  static let apiKeyVariables = ["openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "nvidia": "NVIDIA_API_KEY"]

  /// The provider's API key: the preferred variable for its type, else the first credential by name.
  static func keyName(_ p: ProviderRecord) -> String? {
    if let preferred = apiKeyVariables[p.type.lowercased()], p.credentials[preferred] != nil { return preferred }
    return p.credentials.keys.sorted().first
  }

  /// Resolves one route against the current providers (errors as OpenShell's GetInferenceBundle).
  static func resolve(route: String, provider: String, model: String, timeout: UInt32, state: GatewayState) throws -> Resolved {
    guard !provider.isEmpty, !model.isEmpty else {
      throw RPCErrors.failedPrecondition("inference route '\(route)' has no provider or model")
    }
    guard let p = state.provider(named: provider, workspace: providerWorkspace) else {
      throw RPCErrors.failedPrecondition("configured provider '\(provider)' was not found")
    }
    guard supportedTypes.contains(p.type.lowercased()) else {
      throw RPCErrors.invalidArgument(
        field: "provider_name", "provider '\(provider)' has unsupported type '\(p.type)' (supported: openai, anthropic, nvidia)")
    }
    guard let keyName = keyName(p), let sealed = p.credentials[keyName] else {
      throw RPCErrors.failedPrecondition(
        "provider '\(provider)' has no API key credential (expected \(apiKeyVariables[p.type.lowercased()] ?? "an API key"))"
      )
    }
    return Resolved(
      name: route, baseURL: baseURL(p), protocols: protocols(p.type.lowercased()), providerType: p.type.lowercased(), model: model,
      timeout: timeout, keyName: keyName, sealedKey: sealed, provider: p)
  }

  /// Every configured route, resolved, user route first.
  static func resolveAll(_ state: GatewayState) throws -> [Resolved] {
    try [userRoute, systemRoute].compactMap { name in
      guard let r = state.inferenceRoutes[name] else { return nil }
      return try resolve(route: name, provider: r.provider, model: r.model, timeout: r.timeoutSeconds, state: state)
    }
  }

  /// The bundle revision: 16 hex digits of SHA-256 over the resolved routes, with the digest of the
  /// sealed credential in place of the key (rotation changes it; no plaintext is involved).
  static func revision(_ routes: [Resolved]) -> String {
    var h = SHA256()
    for r in routes {
      let sealedDigest = SHA256.hash(data: r.sealedKey).map { String(format: "%02x", $0) }.joined()
      let fields = [r.name, r.baseURL, r.protocols.joined(separator: ","), r.model, r.providerType, String(r.timeout), r.keyName, sealedDigest]
      h.update(data: Data((fields.joined(separator: "\u{1f}") + "\u{1e}").utf8))
    }
    return h.finalize().prefix(8).map { String(format: "%02x", $0) }.joined()
  }

  /// `inference_bundle.published` when the resolvable bundle's revision differs from the last one
  /// published; nothing while a route cannot be resolved (sandboxes keep their cached routes).
  static func publication(_ state: GatewayState) -> [GatewayEvent] {
    guard let routes = try? resolveAll(state) else { return [] }
    let rev = routes.isEmpty ? "" : revision(routes)
    guard rev != state.inferenceBundleRevision else { return [] }
    return [
      GatewayEvent(
        .inferenceBundlePublished(
          .with {
            $0.revision = rev; $0.routes = routes.map(\.name)
          }))
    ]
  }

  func bundle(_ state: GatewayState) throws -> Openshell_Inference_V1_GetInferenceBundleResponse {
    try bundle(routes: try Self.resolveAll(state))
  }

  /// The bundle of already resolved `routes` (API keys decrypted here).
  func bundle(routes: [Resolved]) throws -> Openshell_Inference_V1_GetInferenceBundleResponse {
    guard let vault else { throw RPCError(code: .failedPrecondition, message: "this gateway has no secret vault") }
    var out = Openshell_Inference_V1_GetInferenceBundleResponse()
    for r in routes {
      let key: String
      do { key = try vault.open(r.sealedKey, keyID: r.provider.dataKeyID, name: r.keyName) } catch {
        throw RPCErrors.undecryptable(key: r.keyName, provider: r.provider.name, error)
      }
      out.routes.append(
        .with {
          $0.name = r.name
          $0.baseURL = r.baseURL
          $0.protocols = r.protocols
          $0.apiKey = key
          $0.modelID = r.model
          $0.providerType = r.providerType
          $0.timeoutSecs = r.timeout
        })
    }
    out.revision = routes.isEmpty ? "" : Self.revision(routes)
    out.generatedAtMs = Int64(Date().timeIntervalSince1970 * 1000)
    return out
  }

  static func wire(_ r: InferenceRouteRecord) -> Openshell_Inference_V1_InferenceRoute {
    .with {
      $0.name = r.route
      $0.providerName = r.provider
      $0.modelID = r.model
      $0.timeoutSecs = r.timeoutSeconds
      $0.version = r.version ?? 1
      $0.verified = r.verified
      $0.updatedAtMs = Int64(r.updatedNs / 1_000_000)
    }
  }
}
