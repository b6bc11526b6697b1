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
    // One refresh at a time across CLI processes (refresh tokens may rotate: a second refresh with the old
    // one fails); whoever waited uses the token the first one wrote.
    let lock = RefreshLock(registry.gatewayDir(name).appendingPathComponent(".oidc-refresh.lock").path)
    defer { lock.release() }
    if let again = registry.oidcToken(name), again.isFresh() { return again.access_token }
    guard let refresh = stored.refresh_token, !refresh.isEmpty else {
      throw CLIError("the access token of gateway '\(name)' has expired and there is no refresh token; log in again with: \(login)")
    }
    do {
      let provider = try await OIDCClient.discover(issuer: stored.issuer)
      let response = try await OIDCClient.token(
        provider,
        form: [
          "grant_type": "refresh_token", "refresh_token": refresh, "client_id": stored.client_id,
        ])
      let renewed = response.bundle(issuer: stored.issuer, clientID: stored.client_id, previousRefresh: refresh)
      try registry.writeOIDCToken(name, renewed)
      return renewed.access_token
    } catch {
      // Another client (e.g. the SDK, which does not take this lock) may have refreshed meanwhile.
      if let other = registry.oidcToken(name), other.access_token != stored.access_token, other.isFresh() { return other.access_token }
      guard let e = error as? CLIError else {
        throw CLIError("the access token of gateway '\(name)' has expired and could not be refreshed (\(error)); log in again with: \(login)")
      }
      throw CLIError("the access token of gateway '\(name)' has expired and could not be refreshed (\(e.message)); log in again with: \(login)")
    }
  }
}

/// An exclusive `flock(2)` on a file, held until ``release()`` (or the process exits). Best effort: when the
/// file cannot be opened the caller proceeds unlocked (as before) rather than failing.
final class RefreshLock {
  private var fd: Int32

  init(_ path: String) {
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    if fd >= 0 { _ = flock(fd, LOCK_EX) }
  }

  func release() {
    guard fd >= 0 else { return }
    _ = flock(fd, LOCK_UN)
    close(fd)
    fd = -1
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
