import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The scratch entries `openshell-replay restore` makes in a gateway's data dir while it builds the new
/// log: `log.restore-<pid>` (the staging log) and `.restore-<pid>.archive` (the archive exported from a log
/// directory). A finished or failed restore removes its own; a restore that was killed leaves them behind.
enum RestoreStaging {
  /// Name of the staging log directory of the restore running as `pid`.
  static func stagingName(pid: Int32) -> String { "log.restore-\(pid)" }
  /// Name of the exported archive file of the restore running as `pid`.
  static func archiveName(pid: Int32) -> String { ".restore-\(pid).archive" }

  /// The pid a scratch entry named `name` belongs to, or nil when `name` is not one.
  static func owner(of name: String) -> Int32? {
    if name.hasPrefix("log.restore-") { return Int32(name.dropFirst("log.restore-".count)) }
    if name.hasPrefix(".restore-"), name.hasSuffix(".archive") {
      return Int32(name.dropFirst(".restore-".count).dropLast(".archive".count))
    }
    return nil
  }

  /// Removes the scratch entries in `data` of restores whose process is gone (killed midway); entries of a
  /// live process (another restore running now) are left alone. Returns the names removed.
  @discardableResult
  static func removeAbandoned(in data: URL) -> [String] {
    let fm = FileManager.default
    let names = (try? fm.contentsOfDirectory(atPath: data.path)) ?? []
    var removed: [String] = []
    for name in names.sorted() {
      guard let pid = owner(of: name), pid > 0, pid != getpid() else { continue }
      if kill(pid, 0) == 0 || errno != ESRCH { continue }
      if (try? fm.removeItem(at: data.appendingPathComponent(name))) != nil { removed.append(name) }
    }
    return removed
  }
}
