import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A failed commit as ``CommitRecovery/abortedFile`` records it.
struct AbortedKey: Hashable {
  var firstSeq: UInt64
  var lastHash: [UInt8]
}

extension CommitRecovery {
  /// Records that the commit `marker` describes failed, so that ``run(shared:head:pagesInUse:)`` never puts it
  /// back although its pages (written before `mdb_txn_commit` failed, e.g. at its flush) may be on disk.
  /// Appends to ``abortedFile`` and flushes it (and the directory when the file is new). Returns false when that
  /// failed (the caller then says the commit may be stored).
  static func recordAborted(_ marker: CommitMarker, directory: String) -> Bool {
    let path = directory + "/" + abortedFile
    let existed = access(path, F_OK) == 0
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var entry = [UInt8]()
    entry.appendBE(marker.firstSeq)
    entry.append(contentsOf: marker.lastHash)
    let wrote = entry.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    guard wrote == entry.count, fdatasync(fd) == 0 else { return false }
    if !existed { return (try? fsyncDirectory(directory)) != nil }
    return true
  }

  /// The failed commits recorded in `directory` (a torn last entry is ignored).
  static func loadAborted(directory: String) -> [AbortedKey] {
    guard let data = FileManager.default.contents(atPath: directory + "/" + abortedFile) else { return [] }
    let b = [UInt8](data)
    return stride(from: 0, to: b.count - 39, by: 40).map { o in
      AbortedKey(firstSeq: b[o..<(o + 8)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }, lastHash: Array(b[(o + 8)..<(o + 40)]))
    }
  }

  /// Removes ``abortedFile`` once the head has passed every commit it names (a commit after the head can no
  /// longer start at those seqs).
  static func pruneAborted(directory: String, head: UInt64) throws {
    let entries = loadAborted(directory: directory)
    guard !entries.isEmpty, entries.allSatisfy({ $0.firstSeq <= head }) else { return }
    unlink(directory + "/" + abortedFile)
  }
}
