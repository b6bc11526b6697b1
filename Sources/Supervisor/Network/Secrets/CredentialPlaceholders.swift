import Foundation

/// Provider credentials as placeholders (openshell-behavior.md §1D, "Delivery to the sandbox"): a
/// workload's environment holds `openshell:resolve:env:<KEY>` instead of each value (stable per key,
/// so a rotation needs no restart), and the proxy puts the current value in its place in the requests
/// it inspects and the policy allows: header values (also inside `Authorization: Basic`), path segments
/// and query values. A placeholder whose key has no value fails the request (HTTP 500, fail closed);
/// on an uninspected tunnel a placeholder stays a placeholder.
enum CredentialPlaceholders {
  static let prefix = "openshell:resolve:env:"

  /// The placeholder a workload sees for `key`.
  static func placeholder(_ key: String) -> String { prefix + key }

  /// The workload's view of provider variables: every key mapped to its placeholder.
  static func environment(_ values: [String: String]) -> [String: String] {
    Dictionary(uniqueKeysWithValues: values.keys.map { ($0, placeholder($0)) })
  }

  /// A placeholder named a key the sandbox has no credential for.
  struct Unresolved: Error, CustomStringConvertible {
    var key: String
    var description: String { "credential placeholder \(CredentialPlaceholders.placeholder(key)) has no value in this sandbox (fail closed)" }
  }

  /// Replaces every placeholder in `text` with its value from `values`.
  /// - Parameter encode: applied to each value (e.g. percent-encoding inside a URL).
  /// - Throws: ``Unresolved`` for a placeholder whose key is not in `values`.
  /// - Returns: the text and the keys whose values were put in (empty: nothing was replaced).
  static func resolve(_ text: String, _ values: [String: String], encode: (String) -> String = { $0 }) throws -> (String, Set<String>) {
    guard text.contains(prefix) else { return (text, []) }
    var keys = Set<String>()
    var out = ""
    var rest = Substring(text)
    while let r = rest.range(of: prefix) {
      out += rest[..<r.lowerBound]
      let after = rest[r.upperBound...]
      let key = after.prefix { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
      guard !key.isEmpty, !(key.first!.isNumber) else { throw Unresolved(key: String(key)) }
      guard let value = values[String(key)] else { throw Unresolved(key: String(key)) }
      out += encode(value)
      keys.insert(String(key))
      rest = after[key.endIndex...]
    }
    out += rest
    return (out, keys)
  }

  /// A resolved header value would contain CR, LF or NUL (it could forge headers): refused.
  struct UnsafeValue: Error, CustomStringConvertible {
    var header: String
    var description: String { "the credential for header \(header) contains a line break or NUL; refused" }
  }

  /// Resolves a header value; `Basic` credentials are decoded, resolved and re-encoded.
  /// - Parameter used: receives the keys whose values were put in.
  /// - Throws: ``Unresolved``, ``UnsafeValue``.
  static func resolveHeader(name: String, value: String, _ values: [String: String], used: inout Set<String>) throws -> String {
    let (resolved, keys) = try resolveHeaderValue(name: name, value: value, values)
    guard !resolved.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) else { throw UnsafeValue(header: name) }
    used.formUnion(keys)
    return resolved
  }

  private static func resolveHeaderValue(name: String, value: String, _ values: [String: String]) throws -> (String, Set<String>) {
    let lower = name.lowercased()
    if lower == "authorization" || lower == "proxy-authorization", value.lowercased().hasPrefix("basic ") {
      let encoded = value.dropFirst(6).trimmingCharacters(in: .whitespaces)
      if let data = Data(base64Encoded: encoded), let decoded = String(data: data, encoding: .utf8), decoded.contains(prefix) {
        let (resolved, keys) = try resolve(decoded, values)
        return ("Basic " + Data(resolved.utf8).base64EncodedString(), keys)
      }
    }
    return try resolve(value, values)
  }

  /// Resolves the path and query of an origin-form request target; values are percent-encoded so
  /// that they cannot change the target's structure (no `/`, `?`, `&`, `#` smuggled in).
  /// - Parameter used: receives the keys whose values were put in.
  /// - Throws: ``Unresolved``.
  static func resolveTarget(_ target: String, _ values: [String: String], used: inout Set<String>) throws -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    let (resolved, keys) = try resolve(target, values) { $0.addingPercentEncoding(withAllowedCharacters: allowed) ?? "" }
    used.formUnion(keys)
    return resolved
  }
}
