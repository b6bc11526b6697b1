import Foundation
import SwiftProtobuf

/// Object naming rule, the same for every object (sandboxes, workspaces, templates, providers):
/// an RFC 1123 DNS label — 1 to 63 characters of lowercase ASCII letters, digits and '-',
/// starting and ending with a letter or digit. (Kubernetes uses the same rule for most names, and
/// OpenShell sandbox names become pod names.)
public enum NameRule {
  /// Maximum length in characters (RFC 1123 label).
  public static let maxLength = 63

  /// - Returns: nil when valid, else a description of the violation.
  public static func violation(_ name: String) -> String? {
    if name.isEmpty { return "must not be empty" }
    if name.utf8.count > maxLength { return "must be at most \(maxLength) characters (got \(name.utf8.count))" }
    let bytes = Array(name.utf8)
    for b in bytes where !(b >= 0x61 && b <= 0x7a) && !(b >= 0x30 && b <= 0x39) && b != 0x2d {
      return "must consist of lowercase letters, digits and '-' (RFC 1123 label); found \(String(UnicodeScalar(b)).debugDescription)"
    }
    if bytes.first == 0x2d || bytes.last == 0x2d { return "must start and end with a letter or digit" }
    return nil
  }
}

/// Label keys and values: keys 1–253 characters of letters, digits, '.', '_', '-', '/', starting and
/// ending alphanumeric; values up to 256 characters with no control characters.
enum LabelRule {
  static func violation(key: String, value: String) -> String? {
    if key.isEmpty || key.utf8.count > 253 { return "label key must be 1-253 characters" }
    let ok = key.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._-/".unicodeScalars.contains($0)) }
    if !ok { return "label key \(key.debugDescription) may contain only letters, digits, '.', '_', '-' and '/'" }
    if value.utf8.count > 256 { return "label value for \(key) must be at most 256 bytes of UTF-8" }
    if value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) { return "label value for \(key) contains control characters" }
    return nil
  }
}

/// Environment variables given to sandbox processes (CreateSandbox `spec.environment` and
/// `spec.template.environment`, ExecSandbox `environment`): POSIX names (`[A-Za-z_][A-Za-z0-9_]*`,
/// IEEE Std 1003.1 "Environment Variables"), values without NUL.
enum EnvironmentRule {
  /// - Returns: nil when valid, else a description of the violation.
  static func violation(name: String, value: String) -> String? {
    if !ProviderCatalog.isEnvironmentName(name) {
      return "invalid variable name \(name.debugDescription): must match [A-Za-z_][A-Za-z0-9_]*"
    }
    if value.utf8.contains(0) { return "the value of \(name) contains NUL" }
    return nil
  }

  /// - Throws: INVALID_ARGUMENT with a field violation naming `field`, for the first invalid variable
  ///   in name order.
  static func check(_ environment: [String: String], field: String) throws {
    for name in environment.keys.sorted() {
      if let v = violation(name: name, value: environment[name]!) { throw RPCErrors.invalidArgument(field: field, v) }
    }
  }
}

/// Resource quantities of a sandbox spec (`spec.template.resources`).
enum ResourcesRule {
  /// The first malformed cpu/memory quantity (`cpu`, `memory`, and those under `limits`/`requests`), as
  /// `ResourceLimits.parse` describes it, e.g. a quantity that does not parse or one below the smallest
  /// accepted. Keys it does not know are left for the compute driver to accept or refuse.
  /// - Returns: nil when the quantities are well formed.
  static func violation(_ resources: Google_Protobuf_Struct) -> String? {
    let quantities: Set<String> = ["cpu", "memory"]
    var known = Google_Protobuf_Struct()
    for (key, value) in resources.fields {
      if quantities.contains(key) {
        known.fields[key] = value
      } else if key == "limits" || key == "requests" {
        if case .structValue(let s)? = value.kind {
          known.fields[key] = Google_Protobuf_Value(structValue: Google_Protobuf_Struct(fields: s.fields.filter { quantities.contains($0.key) }))
        } else {
          known.fields[key] = value
        }
      }
    }
    do {
      _ = try ResourceLimits.parse(known)
      return nil
    } catch {
      return error.message
    }
  }
}

/// Kubernetes-style label selector: comma-separated `k=v`, `k==v`, `k!=v`, `k` (exists), `!k` (absent).
struct LabelSelector: Sendable {
  enum Term: Sendable {
    case equals(String, String)
    case notEquals(String, String)
    case exists(String)
    case absent(String)
  }
  let terms: [Term]

  /// - Returns: nil for a syntactically invalid selector.
  init?(_ text: String) {
    var terms: [Term] = []
    for raw in text.split(separator: ",", omittingEmptySubsequences: false) {
      let part = raw.trimmingCharacters(in: .whitespaces)
      if part.isEmpty { if text.trimmingCharacters(in: .whitespaces).isEmpty { continue } else { return nil } }
      if let r = part.range(of: "!=") {
        let k = part[..<r.lowerBound].trimmingCharacters(in: .whitespaces)
        guard !k.isEmpty else { return nil }
        terms.append(.notEquals(k, part[r.upperBound...].trimmingCharacters(in: .whitespaces)))
      } else if let r = part.range(of: "==") ?? part.range(of: "=") {
        let k = part[..<r.lowerBound].trimmingCharacters(in: .whitespaces)
        guard !k.isEmpty else { return nil }
        terms.append(.equals(k, part[r.upperBound...].trimmingCharacters(in: .whitespaces)))
      } else if part.hasPrefix("!") {
        let k = part.dropFirst().trimmingCharacters(in: .whitespaces)
        guard !k.isEmpty else { return nil }
        terms.append(.absent(k))
      } else {
        guard !part.contains(" ") else { return nil }
        terms.append(.exists(part))
      }
    }
    self.terms = terms
  }

  func matches(_ labels: [String: String]) -> Bool {
    terms.allSatisfy {
      switch $0 {
      case .equals(let k, let v): labels[k] == v
      case .notEquals(let k, let v): labels[k] != v
      case .exists(let k): labels[k] != nil
      case .absent(let k): labels[k] == nil
      }
    }
  }
}

/// Offset pagination over a stably sorted list. The page token is the opaque base64 of
/// `v1:<sort key of the last item>`; the next page starts after that key, so concurrent inserts or
/// deletes never repeat an item. A page is bounded by count (`page_size`, at most ``maxPageSize``) and, when
/// `measure` gives each item's serialized size, by bytes (`maxBytes`, default
/// ``ObjectLimits/maxListResponseBytes``): it ends before the item that would exceed the budget (a page holds
/// at least one item) and the token continues from there.
enum Pagination {
  /// Default and maximum page sizes.
  static let defaultPageSize = 100
  static let maxPageSize = 1000

  static func page<T>(
    _ items: [T], key: (T) -> String, pageSize: Int32, pageToken: String,
    measure: ((T) -> Int)? = nil, maxBytes: Int = ObjectLimits.maxListResponseBytes
  ) throws -> (items: [T], next: String) {
    guard pageSize >= 0 else { throw RPCErrors.invalidArgument(field: "page_size", "must not be negative") }
    let size = pageSize == 0 ? defaultPageSize : min(Int(pageSize), maxPageSize)
    var start = 0
    if !pageToken.isEmpty {
      guard let data = Data(base64Encoded: pageToken), let text = String(data: data, encoding: .utf8), text.hasPrefix("v1:") else {
        throw RPCErrors.invalidArgument(field: "page_token", "is not a token returned by this gateway")
      }
      let after = String(text.dropFirst(3))
      start = items.firstIndex { key($0) > after } ?? items.count
    }
    var end = start
    var bytes = 0
    while end < min(items.count, start + size) {
      if let measure {
        let b = measure(items[end])
        if end > start && bytes + b > maxBytes { break }
        bytes += b
      }
      end += 1
    }
    let slice = Array(items[start..<end])
    let more = end < items.count
    let next = more ? Data("v1:\(key(slice[slice.count - 1]))".utf8).base64EncodedString() : ""
    return (slice, next)
  }
}
