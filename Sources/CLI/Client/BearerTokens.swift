import Foundation
import GRPCCore

/// The access token to present to an OIDC gateway: the stored one while it is good for 30 more seconds,
/// else a refreshed one (refresh-token grant, RFC 6749 §6), written back to `oidc_token.json` so that
/// the SDK and other CLI processes see the rotated tokens (as the SDK's `_OidcRefresher` does).
enum BearerTokens {
  /// The current access token of registration `name`.
  /// - Throws: `CLIError` that says to run `openshell gateway login NAME` when there is no token or the
  ///   refresh failed.
  static func current(gateway name: String, registry: ClientRegistry = .default) async throws -> String {
    let login = "openshell gateway login \(name)"
    guard let stored = registry.oidcToken(name) else {
      throw CLIError("gateway '\(name)' has no stored login; log in with: \(login)")
    }
    if stored.isFresh() { return stored.access_token }
    guard let refresh = stored.refresh_token, !refresh.isEmpty else {
      throw CLIError("the access token of gateway '\(name)' has expired and there is no refresh token; log in again with: \(login)")
    }
    do {
      let provider = try await OIDCClient.discover(issuer: stored.issuer)
      let response = try await OIDCClient.token(provider, form: [
        "grant_type": "refresh_token", "refresh_token": refresh, "client_id": stored.client_id,
      ])
      let renewed = response.bundle(issuer: stored.issuer, clientID: stored.client_id, previousRefresh: refresh)
      try registry.writeOIDCToken(name, renewed)
      return renewed.access_token
    } catch let e as CLIError {
      throw CLIError("the access token of gateway '\(name)' has expired and could not be refreshed (\(e.message)); log in again with: \(login)")
    } catch {
      throw CLIError("the access token of gateway '\(name)' has expired and could not be refreshed (\(error)); log in again with: \(login)")
    }
  }
}

/// Adds `authorization: Bearer <token>` to every call (RFC 6750 §2.1; what the openshell SDK's
/// `_BearerAuthInterceptor` sends).
struct BearerClientInterceptor: ClientInterceptor {
  let token: String

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingClientRequest<Input>,
    context: ClientContext,
    next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
  ) async throws -> StreamingClientResponse<Output> {
    var request = request
    request.metadata.replaceOrAddString("Bearer \(token)", forKey: "authorization")
    return try await next(request, context)
  }
}
