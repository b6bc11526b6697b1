import Foundation
import JWTKit

/// A bearer token the gateway accepted.
public struct VerifiedBearer: Sendable, Hashable {
  /// The token's `sub`: becomes the actor `oidc:<sub>` of every event the caller causes.
  public var subject: String
  /// The token's `exp`.
  public var expiresAt: Date
  /// `client_id` or `azp` when the token names the client it was issued to.
  public var clientID: String?
}

/// Why a bearer token was refused (one sentence, safe to show: it never contains the token).
public struct BearerRefusal: Error, CustomStringConvertible, Sendable, Equatable {
  /// The reason, e.g. `token expired at 2026-12-05T22:00:00Z`.
  public let description: String
  /// True when the gateway could not check the token (the issuer's keys could not be fetched), rather
  /// than the token being wrong. Answered UNAVAILABLE instead of UNAUTHENTICATED.
  public let issuerUnavailable: Bool

  init(_ description: String, issuerUnavailable: Bool = false) {
    self.description = description
    self.issuerUnavailable = issuerUnavailable
  }
}

/// The claims the gateway reads (RFC 7519 §4.1). Checked by ``BearerVerifier`` with its clock skew, not
/// by jwt-kit's `verify(using:)`, which would check `exp` without tolerance.
struct OIDCAccessClaims: JWTPayload {
  var iss: IssuerClaim
  var sub: SubjectClaim
  var aud: AudienceClaim
  var exp: ExpirationClaim
  var nbf: NotBeforeClaim?
  var iat: IssuedAtClaim?
  var azp: String?
  var client_id: String?

  func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Verifies OIDC bearer tokens: JWS signature with the issuer's keys (``OIDCKeyStore``), then `iss`,
/// `aud`, `exp`, `nbf` and `iat` against ``OIDCSettings`` (RFC 7519 §7.2, RFC 9068 §4).
///
/// Accepted signing algorithms: RS256/384/512, PS256/384/512, ES256/384/512, EdDSA. `none` and the HMAC
/// algorithms are refused before any key is looked at (a public key must never serve as an HMAC secret,
/// RFC 8725 §2.1, §3.1).
public final class BearerVerifier: Sendable {
  static let acceptedAlgorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
  /// Longest token accepted, in bytes (a JWT from a real issuer is a few KiB).
  static let maxTokenBytes = 16 * 1024

  /// Issuer, audience and timing rules the tokens are checked against.
  public let settings: OIDCSettings
  let keys: OIDCKeyStore

  /// A verifier for `settings`; the issuer's keys are fetched on first use, not here.
  public init(settings: OIDCSettings) {
    self.settings = settings
    self.keys = OIDCKeyStore(settings: settings)
  }

  /// Fetches the issuer's discovery document and keys now; returns the failure, or nil.
  public func prefetch() async -> String? { await keys.prefetch() }

  /// Verifies `token` at time `now`.
  /// - Throws: ``BearerRefusal`` with the reason.
  public func verify(_ token: String, now: Date = Date()) async throws(BearerRefusal) -> VerifiedBearer {
    guard token.utf8.count <= Self.maxTokenBytes else { throw BearerRefusal("the token is longer than \(Self.maxTokenBytes) bytes") }
    let parts = token.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty }) else {
      throw BearerRefusal("the token is not a signed JWT (expected three dot-separated parts)")
    }
    guard let headerData = Self.base64URLDecode(String(parts[0])),
      let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any]
    else { throw BearerRefusal("the token's header is not base64url JSON") }
    let alg = header["alg"] as? String ?? ""
    guard Self.acceptedAlgorithms.contains(alg) else {
      throw BearerRefusal("signing algorithm '\(alg.prefix(16))' is not accepted")
    }
    let kid = header["kid"] as? String
    let collection: JWTKeyCollection
    do {
      collection = try await keys.keys(for: kid)
    } catch let e as OIDCKeyStore.FetchError {
      // An unknown kid with reachable keys is the token's fault; no keys at all is the issuer's.
      throw BearerRefusal(e.description, issuerUnavailable: !e.description.contains("is not among the issuer's keys"))
    } catch {
      throw BearerRefusal("\(error)", issuerUnavailable: true)
    }
    let claims: OIDCAccessClaims
    do {
      claims = try await collection.verify(token, as: OIDCAccessClaims.self)
    } catch let e as JWTError {
      switch e.errorType {
      case .signatureVerificationFailed: throw BearerRefusal("the token's signature does not verify with the issuer's key")
      case .malformedToken: throw BearerRefusal("the token is malformed or lacks a required claim (iss, sub, aud and exp are required)")
      default: throw BearerRefusal("the token was refused: \(e.reason ?? "\(e.errorType)")")
      }
    } catch is DecodingError {
      throw BearerRefusal("the token lacks a required claim (iss, sub, aud and exp are required)")
    } catch {
      // Anything else the JWT library throws (bad base64, a truncated segment) is a malformed token; the
      // library's description names internals, not the token's problem.
      throw BearerRefusal("the token is malformed (not three base64url segments of a signed JWT)")
    }
    return try check(claims, now: now)
  }

  /// The claim checks after the signature verified.
  func check(_ claims: OIDCAccessClaims, now: Date) throws(BearerRefusal) -> VerifiedBearer {
    let skew = TimeInterval(settings.clockSkew.components.seconds)
    var iss = claims.iss.value
    while iss.hasSuffix("/") { iss.removeLast() }
    guard iss == settings.normalizedIssuer else {
      throw BearerRefusal("the token's issuer '\(claims.iss.value.prefix(200))' is not '\(settings.issuer)'")
    }
    guard claims.aud.value.contains(settings.audience) else {
      throw BearerRefusal(
        "the token's audience \(claims.aud.value.prefix(5).map { "'\($0.prefix(100))'" }.joined(separator: ", ")) does not include '\(settings.audience)'")
    }
    guard now.timeIntervalSince(claims.exp.value) < skew else {
      throw BearerRefusal("the token expired at \(Self.iso(claims.exp.value))")
    }
    if let nbf = claims.nbf, nbf.value.timeIntervalSince(now) > skew {
      throw BearerRefusal("the token is not valid before \(Self.iso(nbf.value))")
    }
    if let iat = claims.iat, iat.value.timeIntervalSince(now) > skew {
      throw BearerRefusal("the token was issued in the future (\(Self.iso(iat.value)))")
    }
    let sub = claims.sub.value
    guard !sub.isEmpty, sub.count <= 255, !sub.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
      throw BearerRefusal("the token's subject is empty, longer than 255 characters or contains control characters")
    }
    return VerifiedBearer(subject: sub, expiresAt: claims.exp.value, clientID: claims.client_id ?? claims.azp)
  }

  static func iso(_ date: Date) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    return f.string(from: date)
  }

  static func base64URLDecode(_ s: String) -> Data? {
    var b = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while b.count % 4 != 0 { b += "=" }
    return Data(base64Encoded: b)
  }
}
