import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// One readable line for a Foundation file error, instead of its `NSError` dump
/// (`Error Domain=NSCocoaErrorDomain Code=512 "(null)" UserInfo={NSFilePath=…, NSUnderlyingError=…}`), e.g.
/// "cannot write /home/u/.local: Not a directory". Nil for any other error.
public func fileErrorText(_ error: Error) -> String? {
  let e = error as NSError
  guard e.domain == NSCocoaErrorDomain else { return nil }
  let path = (e.userInfo[NSFilePathErrorKey] as? String) ?? (e.userInfo[NSURLErrorKey] as? URL)?.path
  var reason: String?
  if let underlying = e.userInfo[NSUnderlyingErrorKey] as? Error {
    let u = underlying as NSError
    if u.domain == NSPOSIXErrorDomain { reason = String(cString: strerror(Int32(u.code))) }
  }
  // CocoaError codes: 256–511 reading, 512–1023 writing (4 and 260: no such file); the generic ones below 256
  // (4 also for a write into a missing directory) do not say which.
  let op = e.code >= 512 && e.code < 1024 ? "cannot write" : e.code >= 256 && e.code < 512 ? "cannot read" : "cannot access"
  let what = reason ?? (e.code == 4 || e.code == 260 ? "no such file or directory" : "file error \(e.code)")
  return path.map { "\(op) \($0): \(what)" } ?? "\(op): \(what)"
}

/// One readable line for any error, for messages that people read (an event's `message`, a log line): a
/// Foundation file error as ``fileErrorText(_:)`` words it, a POSIX error as its `strerror` text, any other
/// as its description with line breaks folded, at most `limit` characters (cut with `…`).
///
/// It says what the error says and nothing more: callers must not hand it errors that carry secrets.
public func errorLine(_ error: Error, limit: Int = 300) -> String {
  if let text = fileErrorText(error) { return text }
  let e = error as NSError
  let text =
    e.domain == NSPOSIXErrorDomain
    ? String(cString: strerror(Int32(e.code)))
    : "\(error)".split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.joined(separator: " ")
  return text.count > limit ? String(text.prefix(max(0, limit - 1))) + "…" : text
}
