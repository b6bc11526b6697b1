import Crypto
import Foundation
import NIOHTTP1
import OpenShellAPI

/// AWS Signature Version 4 re-signing by the proxy (enforcement-and-ssh.md §1.4, row "L7": "SigV4
/// re-signing"; upstream `docs/providers/aws-sigv4.mdx`, `sigv4.rs`): on an inspected endpoint with
/// `credential_signing`, the request the agent signed with placeholder credentials is stripped of its
/// `Authorization`, `X-Amz-Date`, `X-Amz-Security-Token` and `X-Amz-Content-Sha256`, and signed again
/// with the sandbox's real `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), for
/// `signing_service` and `signing_region` (else the region in the host name, e.g.
/// `bedrock-runtime.us-east-1.amazonaws.com`). Signed headers: `host`, `content-type` when present,
/// every `x-amz-*`. Payload: `sigv4:body` hashes the body (buffered, at most ``maxBodyBytes``),
/// `sigv4:no_body` signs `UNSIGNED-PAYLOAD` and streams it, `sigv4` picks `no_body` when the client
/// itself sent `X-Amz-Content-Sha256: UNSIGNED-PAYLOAD`. AWS's chunk-signed streaming uploads
/// (`STREAMING-…` payloads) cannot be re-signed this way and are refused.
/// The algorithm: https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
struct SigV4Signer: Equatable {
  /// The most body bytes buffered to hash a signed payload (upstream: 10 MiB).
  static let maxBodyBytes = 10 << 20

  var service: String
  var region: String
  /// Hash and sign the body (else `UNSIGNED-PAYLOAD`).
  var signBody: Bool

  struct Refusal: Error, CustomStringConvertible {
    var status: HTTPResponseStatus
    var description: String
  }

  /// The signer for a request through `endpoints` to `host`; nil when no endpoint signs.
  /// - Throws: ``Refusal`` when the endpoints disagree, no region is known, or the payload is streamed-signed.
  static func forRequest(_ head: HTTPRequestHead, endpoints: [Openshell_Sandbox_V1_NetworkEndpoint], host: String) throws -> SigV4Signer? {
    let modes = Set(endpoints.map(\.credentialSigning))
    guard modes != [""] else { return nil }
    guard modes.count == 1, let e = endpoints.first else {
      throw Refusal(status: .internalServerError, description: "the endpoints matching \(host) disagree on credential_signing")
    }
    guard let region = e.signingRegion.isEmpty ? regionFromHost(host) : e.signingRegion else {
      throw Refusal(status: .internalServerError, description: "no signing_region and none in the host name \(host)")
    }
    let clientPayload = head.headers.first(name: "x-amz-content-sha256") ?? ""
    if clientPayload.hasPrefix("STREAMING-") {
      throw Refusal(status: .badRequest, description: "chunk-signed streaming payloads (\(clientPayload.prefix(40))) cannot be re-signed by the proxy")
    }
    let signBody = e.credentialSigning == "sigv4:body" || (e.credentialSigning == "sigv4" && clientPayload != "UNSIGNED-PAYLOAD")
    return SigV4Signer(service: e.signingService, region: region, signBody: signBody)
  }

  /// The region label of an AWS host name (`<service>.<region>.amazonaws.com[.cn]`, also FIPS/dualstack forms).
  static func regionFromHost(_ host: String) -> String? {
    let labels = host.lowercased().split(separator: ".").map(String.init)
    guard let aws = labels.firstIndex(of: "amazonaws"), aws >= 2 else { return nil }
    return labels[..<aws].reversed().first { l in
      let parts = l.split(separator: "-")
      return parts.count >= 3 && parts.last!.allSatisfy(\.isNumber) && parts.first!.count == 2
    }
  }

  private static func hex(_ d: some Sequence<UInt8>) -> String { d.map { String(format: "%02x", $0) }.joined() }

  /// RFC 3986 unreserved characters kept, everything else `%XX` (upper case), as SigV4 requires.
  static func encode(_ s: String) -> String {
    var out = ""
    for b in s.utf8 {
      switch b {
      case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
        UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
        out.unicodeScalars.append(Unicode.Scalar(b))
      default: out += String(format: "%%%02X", b)
      }
    }
    return out
  }

  private static func decode(_ s: Substring) -> String {
    String(decoding: BodyCredentials.percentDecoded(Array(s.utf8)[...]), as: UTF8.self)
  }

  /// The credential keys a signature made now puts to use (the audit's substitution record): the access
  /// key id (sent in `Authorization`), the secret key (signs) and the session token when there is one.
  func keys(_ values: [String: String]) -> Set<String> {
    var keys: Set<String> = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    if let token = values["AWS_SESSION_TOKEN"], !token.isEmpty { keys.insert("AWS_SESSION_TOKEN") }
    return keys
  }

  /// Signs `head` (origin-form target, real credentials from `values`) at `date`.
  /// - Parameter body: the payload when ``signBody``.
  /// - Throws: ``Refusal`` (500) when the sandbox holds no AWS credentials.
  func sign(_ head: inout HTTPRequestHead, body: [UInt8], values: [String: String], date: Date = Date()) throws {
    guard let key = values["AWS_ACCESS_KEY_ID"], let secret = values["AWS_SECRET_ACCESS_KEY"], !key.isEmpty, !secret.isEmpty else {
      throw Refusal(
        status: .internalServerError, description: "credential_signing needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the sandbox's providers")
    }
    let f = DateFormatter()
    f.locale = Locale(identifier: "en_US_POSIX")
    f.timeZone = TimeZone(identifier: "UTC")
    f.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
    let amzDate = f.string(from: date)
    let day = String(amzDate.prefix(8))
    let payload = signBody ? Self.hex(SHA256.hash(data: body)) : "UNSIGNED-PAYLOAD"
    for name in ["authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"] { head.headers.remove(name: name) }
    head.headers.add(name: "x-amz-date", value: amzDate)
    head.headers.add(name: "x-amz-content-sha256", value: payload)
    if let token = values["AWS_SESSION_TOKEN"], !token.isEmpty { head.headers.add(name: "x-amz-security-token", value: token) }

    // Canonical request.
    let target = head.uri
    let q = target.firstIndex(of: "?")
    let rawPath = q.map { String(target[..<$0]) } ?? target
    let rawQuery = q.map { String(target[target.index(after: $0)...]) } ?? ""
    let path =
      service == "s3"
      ? rawPath.split(separator: "/", omittingEmptySubsequences: false).map { Self.encode(Self.decode($0)) }.joined(separator: "/")
      : rawPath.split(separator: "/", omittingEmptySubsequences: false).map { Self.encode(Self.encode(Self.decode($0))) }.joined(separator: "/")
    var pairs: [(String, String)] = []
    for pair in rawQuery.split(separator: "&") {
      let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
      let k: String = Self.encode(Self.decode(kv[0]))
      let v: String = kv.count > 1 ? Self.encode(Self.decode(kv[1])) : ""
      pairs.append((k, v))
    }
    pairs.sort { a, b in a.0 != b.0 ? a.0 < b.0 : a.1 < b.1 }
    let query: String = pairs.map { p -> String in p.0 + "=" + p.1 }.joined(separator: "&")
    var signed: [String: String] = [:]
    for (name, value) in head.headers {
      let n = name.lowercased()
      guard n == "host" || n == "content-type" || n.hasPrefix("x-amz-") else { continue }
      let v = value.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
      signed[n] = signed[n].map { $0 + "," + v } ?? v
    }
    let names = signed.keys.sorted()
    let canonical = [
      head.method.rawValue, path.isEmpty ? "/" : path, query,
      names.map { "\($0):\(signed[$0]!)\n" }.joined(), names.joined(separator: ";"), payload,
    ].joined(separator: "\n")
    let scope = "\(day)/\(region)/\(service)/aws4_request"
    let toSign = ["AWS4-HMAC-SHA256", amzDate, scope, Self.hex(SHA256.hash(data: Data(canonical.utf8)))].joined(separator: "\n")
    func mac(_ k: SymmetricKey, _ s: String) -> SymmetricKey { SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Data(s.utf8), using: k)) }
    let kSigning = mac(mac(mac(mac(SymmetricKey(data: Data(("AWS4" + secret).utf8)), day), region), service), "aws4_request")
    let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Data(toSign.utf8), using: kSigning))
    head.headers.add(
      name: "authorization", value: "AWS4-HMAC-SHA256 Credential=\(key)/\(scope), SignedHeaders=\(names.joined(separator: ";")), Signature=\(signature)")
  }
}
