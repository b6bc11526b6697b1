import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// One readable line for a Foundation file error, instead of its `NSError` dump
/// (`Error Domain=NSCocoaErrorDomain Code=512 "(null)" UserInfo={NSFilePath=…, NSUnderlyingError=…}`), e.g.
/// "cannot write /home/u/.local: Not a directory". Nil for any other error.
func fileErrorText(_ error: Error) -> String? {
  let e = error as NSError
  guard e.domain == NSCocoaErrorDomain else { return nil }
  let path = (e.userInfo[NSFilePathErrorKey] as? String) ?? (e.userInfo[NSURLErrorKey] as? URL)?.path
  var reason: String?
  if let underlying = e.userInfo[NSUnderlyingErrorKey] as? Error {
    let u = underlying as NSError
    if u.domain == NSPOSIXErrorDomain { reason = String(cString: strerror(Int32(u.code))) }
  }
  // CocoaError codes: 256–511 reading, 512–1023 writing (4 and 260: no such file).
  let op = e.code >= 512 && e.code < 1024 ? "cannot write" : "cannot read"
  let what = reason ?? (e.code == 4 || e.code == 260 ? "no such file or directory" : "file error \(e.code)")
  return path.map { "\(op) \($0): \(what)" } ?? "\(op): \(what)"
}
