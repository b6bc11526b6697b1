import Foundation

/// Credential placeholders in request bodies (enforcement-and-ssh.md §1.4, row "L7": placeholders are
/// resolved "per request after admission (headers, bodies, …)"; upstream `docs/reference/policy-schema.mdx`,
/// `request_body_credential_rewrite`, and `architecture/security-policy.md`):
///
/// - On an inspected `protocol: rest` endpoint with `request_body_credential_rewrite: true`, a body of
///   at most ``maxRewriteBytes`` (decoded bytes) is buffered; in `application/json`,
///   `application/x-www-form-urlencoded` and `text/*` bodies every placeholder becomes the current value
///   (JSON: escaped as a JSON string's content; form: inside the decoded field value, re-encoded), and
///   the caller sends it with a new `Content-Length` (a chunked body leaves de-chunked).
/// - Everywhere else on an inspected connection of a sandbox that holds credentials, the body streams
///   through ``MarkerGuard``: a placeholder (also percent-encoded, also split across reads) is refused
///   before its bytes reach the upstream. So a placeholder in a body is either resolved where the policy
///   opts in, or never leaves the proxy; on uninspected tunnels (`tls: skip`, L4) it stays a placeholder.
enum BodyCredentials {
  /// The most body bytes buffered for a rewrite (upstream's 256 KiB). A longer body is streamed through
  /// ``MarkerGuard`` instead: forwarded as sent when it holds no placeholder, refused when it does.
  static let maxRewriteBytes = 256 * 1024

  /// Why a body was refused; `status` is the HTTP status the client gets.
  struct Refusal: Error, CustomStringConvertible {
    var status: Int
    var description: String
  }

  static let marker = Array(CredentialPlaceholders.prefix.utf8)

  /// Whether `bytes` hold a placeholder prefix, raw or percent-encoded (decoded in one pass).
  static func containsMarker(_ bytes: ArraySlice<UInt8>) -> Bool {
    if bytes.count < marker.count { return false }
    if find(marker, in: bytes) { return true }
    guard bytes.contains(UInt8(ascii: "%")) else { return false }
    return find(marker, in: percentDecoded(bytes)[...])
  }

  private static func find(_ needle: [UInt8], in hay: ArraySlice<UInt8>) -> Bool {
    guard hay.count >= needle.count else { return false }
    var i = hay.startIndex
    while i <= hay.endIndex - needle.count {
      if hay[i] == needle[0] && hay[i..<(i + needle.count)].elementsEqual(needle) { return true }
      i += 1
    }
    return false
  }

  private static func hex(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
  }

  /// `%XX` decoded once; anything else (also `+`) as is.
  static func percentDecoded(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var i = bytes.startIndex
    while i < bytes.endIndex {
      if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.endIndex, let h = hex(bytes[i + 1]), let l = hex(bytes[i + 2]) {
        out.append(h << 4 | l)
        i += 3
      } else {
        out.append(bytes[i])
        i += 1
      }
    }
    return out
  }

  /// The media type of a `Content-Type` value (lowercased, parameters dropped).
  static func mediaType(_ contentType: String?) -> String? {
    guard let contentType else { return nil }
    return contentType.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
  }

  /// Resolves the placeholders of a buffered body.
  /// - Returns: the body to send (the input itself when it holds no placeholder).
  /// - Parameter used: receives the keys whose values were put in.
  /// - Throws: ``Refusal``: 415 for a placeholder in another media type, 400 for a body that is not
  ///   UTF-8 or a placeholder in a form field name, 500 (fail closed) for a placeholder without a value.
  static func rewrite(_ body: [UInt8], contentType: String?, values: [String: String], used: inout Set<String>) throws -> [UInt8] {
    guard containsMarker(body[...]) else { return body }
    let type = mediaType(contentType) ?? ""
    guard type == "application/json" || type == "application/x-www-form-urlencoded" || type.hasPrefix("text/") else {
      throw Refusal(
        status: 415,
        description:
          "credential placeholder in a \(type.isEmpty ? "request body without Content-Type" : "\(type.prefix(60)) body"); placeholders are resolved in application/json, application/x-www-form-urlencoded and text/* bodies only"
      )
    }
    guard let text = String(validating: body, as: UTF8.self) else {
      throw Refusal(status: 400, description: "credential placeholder in a request body that is not UTF-8")
    }
    let out: String
    var keys = Set<String>()
    do {
      switch type {
      case "application/json": (out, keys) = try CredentialPlaceholders.resolve(text, values, encode: jsonEscaped)
      case "application/x-www-form-urlencoded": out = try rewriteForm(text, values, used: &keys)
      default: (out, keys) = try CredentialPlaceholders.resolve(text, values)
      }
    } catch let e as CredentialPlaceholders.Unresolved {
      throw Refusal(status: 500, description: e.description)
    }
    let bytes = Array(out.utf8)
    // A placeholder hidden by an encoding this rewrite does not undo (e.g. percent-encoded in JSON).
    if containsMarker(bytes[...]) {
      throw Refusal(status: 403, description: "a credential placeholder in the request body is encoded where it cannot be resolved; refused")
    }
    used.formUnion(keys)
    return bytes
  }

  /// The content of a JSON string literal holding `value` (RFC 8259 §7).
  static func jsonEscaped(_ value: String) -> String {
    var out = ""
    for u in value.unicodeScalars {
      switch u {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
      default: out.unicodeScalars.append(u)
      }
    }
    return out
  }

  /// `application/x-www-form-urlencoded`: placeholders in decoded field values are resolved and the
  /// value re-encoded; a placeholder in a field name is refused.
  static func rewriteForm(_ text: String, _ values: [String: String], used: inout Set<String>) throws -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    func decode(_ s: Substring) -> String {
      String(decoding: percentDecoded(Array(s.replacingOccurrences(of: "+", with: " ").utf8)[...]), as: UTF8.self)
    }
    return try text.split(separator: "&", omittingEmptySubsequences: false).map { field -> String in
      let parts = field.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
      if decode(parts[0]).contains(CredentialPlaceholders.prefix) {
        throw Refusal(status: 400, description: "credential placeholder in a form field name; refused")
      }
      guard parts.count == 2 else { return String(field) }
      let value = decode(parts[1])
      guard value.contains(CredentialPlaceholders.prefix) else { return String(field) }
      let (resolved, keys) = try CredentialPlaceholders.resolve(value, values)
      used.formUnion(keys)
      return String(parts[0]) + "=" + (resolved.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")
    }.joined(separator: "&")
  }
}

/// Streams a request body and refuses it as soon as a credential placeholder shows (see
/// ``BodyCredentials``): the last ``holdBack`` bytes are kept until more arrive, so a placeholder split
/// across reads, even fully percent-encoded (3 wire bytes per character), is seen before any of its
/// bytes are passed on.
struct MarkerGuard {
  /// One byte less than the longest wire form of the marker.
  static let holdBack = 3 * BodyCredentials.marker.count - 1
  private var held: [UInt8] = []

  /// The bytes that may be forwarded now.
  /// - Throws: ``BodyCredentials/Refusal`` (403) when a placeholder shows.
  mutating func pass(_ chunk: some Sequence<UInt8>) throws -> [UInt8] {
    held.append(contentsOf: chunk)
    guard !BodyCredentials.containsMarker(held[...]) else { throw Self.refusal }
    guard held.count > Self.holdBack else { return [] }
    let out = Array(held[..<(held.count - Self.holdBack)])
    held.removeFirst(held.count - Self.holdBack)
    return out
  }

  /// The held bytes, at the end of the body (already checked).
  mutating func finish() -> [UInt8] {
    defer { held = [] }
    return held
  }

  static let refusal = BodyCredentials.Refusal(
    status: 403,
    description:
      "credential placeholder in the request body; this endpoint does not resolve placeholders in bodies (request_body_credential_rewrite is not set), so the request is refused"
  )
}
