import Foundation
import JWTKit
import Logging

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// The issuer's signing keys, fetched from its discovery document's `jwks_uri` (OpenID Connect Discovery
/// 1.0 §3-4, RFC 7517 §5) and cached.
///
/// Refresh rules: the first verification fetches; a token whose `kid` is not cached causes one new fetch
/// (key rotation), at most once per ``OIDCSettings/minimumKeyRefreshInterval``; cached keys older than
/// ``OIDCSettings/keyCacheLifetime`` are fetched again, and kept when that fetch fails (an identity
/// provider that is down does not lock out holders of valid tokens). Concurrent verifications share one
/// fetch. Redirects are not followed (a redirect could steer the gateway to another key set).
actor OIDCKeyStore {
  /// A failure to obtain keys, as one sentence.
  struct FetchError: Error, CustomStringConvertible {
    let description: String
  }

  private struct KeySet {
    var collection: JWTKeyCollection
    var kids: Set<String>
    var fetchedAt: ContinuousClock.Instant
  }

  let settings: OIDCSettings
  private var current: KeySet?
  private var inflight: Task<KeySet, any Error>?
  private var lastAttempt: ContinuousClock.Instant?
  private let session: URLSession
  private let logger = Logger(label: "openshell.gateway.oidc")

  init(settings: OIDCSettings) {
    self.settings = settings
    let config = URLSessionConfiguration.ephemeral
    config.timeoutIntervalForRequest = settings.fetchTimeout
    config.timeoutIntervalForResource = settings.fetchTimeout
    self.session = URLSession(configuration: config, delegate: RefuseRedirects(), delegateQueue: nil)
  }

  /// Number of key-set fetches that succeeded (for tests and logs).
  private(set) var fetches = 0

  /// The key collection to verify a token whose header names `kid` (nil: the token has none).
  ///
  /// - Throws: ``FetchError`` when no keys could be fetched at all, or when `kid` is not among the
  ///   issuer's keys even after a refresh.
  func keys(for kid: String?) async throws -> JWTKeyCollection {
    let clock = ContinuousClock()
    if let set = current {
      let stale = set.fetchedAt.duration(to: clock.now) > settings.keyCacheLifetime
      let unknown = kid.map { !set.kids.contains($0) } ?? false
      if !stale && !unknown { return set.collection }
      let mayFetch = lastAttempt.map { $0.duration(to: clock.now) >= settings.minimumKeyRefreshInterval } ?? true
      if mayFetch || inflight != nil {
        do {
          current = try await refresh()
        } catch {
          logger.warning("OIDC key refresh failed, keeping the cached keys: \(error)")
        }
      }
      let now = current ?? set
      if let kid, !now.kids.contains(kid) {
        throw FetchError(description: "the token's signing key '\(kid.prefix(64))' is not among the issuer's keys")
      }
      return now.collection
    }
    let set = try await refresh()
    current = set
    if let kid, !set.kids.contains(kid) {
      throw FetchError(description: "the token's signing key '\(kid.prefix(64))' is not among the issuer's keys")
    }
    return set.collection
  }

  /// Fetches now (at start-up, to report a misconfigured issuer early). Never throws.
  func prefetch() async -> String? {
    do {
      current = try await refresh()
      return nil
    } catch {
      return "\(error)"
    }
  }

  private func refresh() async throws -> KeySet {
    if let inflight { return try await inflight.value }
    lastAttempt = ContinuousClock().now
    let task = Task { try await self.fetchKeySet() }
    inflight = task
    defer { inflight = nil }
    let set = try await task.value
    fetches += 1
    return set
  }

  private func fetchKeySet() async throws -> KeySet {
    guard let discoveryURL = settings.discoveryURL else { throw FetchError(description: "invalid issuer URL") }
    let discovery = try await getJSON(discoveryURL, what: "discovery document")
    let advertised = (discovery["issuer"] as? String).map {
      var s = $0; while s.hasSuffix("/") { s.removeLast() }; return s
    }
    guard advertised == settings.normalizedIssuer else {
      throw FetchError(
        description: "the discovery document at \(discoveryURL) names issuer '\(discovery["issuer"] as? String ?? "")', not '\(settings.issuer)'")
    }
    // The key set decides which tokens are genuine: fetched over https, or http only from a loopback host
    // (the rule of the issuer itself), never downgraded by a discovery document.
    guard let jwksString = discovery["jwks_uri"] as? String, let jwksURL = URL(string: jwksString),
      let scheme = jwksURL.scheme?.lowercased(),
      scheme == "https" || (scheme == "http" && OIDCSettings.isLoopback(jwksURL.host ?? ""))
    else { throw FetchError(description: "the discovery document at \(discoveryURL) has no usable jwks_uri (https://, or http:// on a loopback host)") }
    let jwks = try await getJSON(jwksURL, what: "key set")
    guard let keys = jwks["keys"] as? [[String: Any]] else {
      throw FetchError(description: "the key set at \(jwksURL) has no \"keys\" array")
    }
    let collection = JWTKeyCollection()
    var kids = Set<String>()
    for key in keys {
      // Signing keys only; a key of an unknown type is skipped, not fatal for the others.
      if let use = key["use"] as? String, use != "sig" { continue }
      guard let kid = key["kid"] as? String, !kid.isEmpty,
        let data = try? JSONSerialization.data(withJSONObject: key), let jwk = try? JSONDecoder().decode(JWK.self, from: data)
      else { continue }
      do {
        try await collection.add(jwk: jwk)
        kids.insert(kid)
      } catch {
        logger.debug("skipping JWK \(kid): \(error)")
      }
    }
    guard !kids.isEmpty else { throw FetchError(description: "the key set at \(jwksURL) has no usable signing key") }
    logger.info("OIDC keys of \(settings.issuer): \(kids.sorted().joined(separator: ", "))")
    return KeySet(collection: collection, kids: kids, fetchedAt: ContinuousClock().now)
  }

  private func getJSON(_ url: URL, what: String) async throws -> [String: Any] {
    var request = URLRequest(url: url)
    request.setValue("application/json", forHTTPHeaderField: "Accept")
    let data: Data
    let response: URLResponse
    do {
      (data, response) = try await session.data(for: request)
    } catch {
      throw FetchError(description: "cannot fetch the issuer's \(what) from \(url): \(error.localizedDescription)")
    }
    guard let http = response as? HTTPURLResponse, http.statusCode == 200 else {
      let code = (response as? HTTPURLResponse)?.statusCode ?? 0
      throw FetchError(description: "the issuer's \(what) at \(url) answered HTTP \(code)")
    }
    guard data.count <= 1 << 20, let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
      throw FetchError(description: "the issuer's \(what) at \(url) is not a JSON object")
    }
    return object
  }
}

/// A URLSession delegate that answers every redirect with the redirect response itself (used for
/// every request to an identity provider: a redirect must not steer keys, codes or tokens elsewhere).
public final class RefuseRedirects: NSObject, URLSessionTaskDelegate, Sendable {
  /// A delegate without state.
  public override init() { super.init() }
  /// Refuses the redirect: completes with nil, so the task ends with the 3xx response itself.
  public func urlSession(
    _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
    newRequest request: URLRequest, completionHandler: @escaping @Sendable (URLRequest?) -> Void
  ) {
    completionHandler(nil)
  }
}
