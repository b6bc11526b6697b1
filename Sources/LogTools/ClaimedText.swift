/// Text a client claims about itself before it is authenticated (the subject of a certificate that failed
/// verification) made safe to keep in an audit record: the client chooses every byte, so the stored sample
/// must neither forge lines or terminal output when printed nor grow with what the client sends (issue 12:
/// a refusal flood must not fill the disk).
public enum ClaimedText {
  /// Largest sample kept, in UTF-8 bytes (the cap includes the truncation marker).
  public static let maxBytes = 256
  /// How many distinct claims (and distinct peer addresses) one refusal window counts exactly; a record
  /// holding this number means at least that many.
  public static let countedDistinct = 1024

  /// `text` with every control character escaped and at most `maxBytes` UTF-8 bytes.
  ///
  /// Escapes: `\n`, `\r`, `\t` as those two characters; any other C0 control, DEL, C1 control, the Unicode
  /// line and paragraph separators and the bidirectional formatting characters (U+202A–U+202E,
  /// U+2066–U+2069, which can reorder what a terminal shows) as `\u{XXXX}`. A longer result is cut at a
  /// scalar boundary and ends with `…(N bytes)`, N being the UTF-8 length of the whole claim.
  /// - Parameter maxBytes: the cap (raised to 32 bytes so that the marker fits).
  public static func sample(_ text: String, maxBytes: Int = ClaimedText.maxBytes) -> String {
    let cap = max(maxBytes, 32)
    let pieces = text.unicodeScalars.lazy.map(escaped)
    if pieces.reduce(0, { $0 + $1.utf8.count }) <= cap { return pieces.joined() }
    let marker = "…(\(text.utf8.count) bytes)"
    let room = cap - marker.utf8.count
    var out = ""
    var used = 0
    for piece in pieces {
      let n = piece.utf8.count
      if used + n > room { break }
      out += piece
      used += n
    }
    return out + marker
  }

  /// An identity as shown: records written before the claimed-subject sample existed kept an unverified
  /// client's claim in the identity (`unverified:<subject>`, as presented), which is escaped and capped here
  /// like ``sample(_:maxBytes:)``; any other identity is returned as it is.
  public static func displayIdentity(_ identity: String) -> String {
    identity.hasPrefix("unverified:") ? "unverified:" + sample(String(identity.dropFirst("unverified:".count))) : identity
  }

  /// One scalar as stored.
  static func escaped(_ s: Unicode.Scalar) -> String {
    switch s.value {
    case 0x0A: return "\\n"
    case 0x0D: return "\\r"
    case 0x09: return "\\t"
    case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069:
      let hex = String(s.value, radix: 16, uppercase: true)
      return "\\u{" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex + "}"
    default: return String(s)
    }
  }
}
