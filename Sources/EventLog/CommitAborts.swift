import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A failed commit as ``CommitRecovery/abortedFile`` records it: its marker's first seq, commit time and last
/// chain hash (the time tells a failed commit from a retry of the same events with the same timestamps).
struct AbortedKey: Hashable {
  var firstSeq: UInt64
  var committedAtNs: UInt64
  var lastHash: [UInt8]

  init(firstSeq: UInt64, committedAtNs: UInt64, lastHash: [UInt8]) {
    self.firstSeq = firstSeq
    self.committedAtNs = committedAtNs
    self.lastHash = lastHash
  }

  init(_ m: CommitMarker) { self.init(firstSeq: m.firstSeq, committedAtNs: m.committedAtNs, lastHash: m.lastHash) }
}

extension CommitRecovery {
  /// Size of an entry of ``abortedFile``: first seq (8, big-endian; 0 = free slot), commit time (8) and last
  /// chain hash (32).
  static let abortedEntrySize = 48
  /// Bytes of zeros ``ensureAbortedFile(directory:)`` writes, so that recording a failure on a full disk
  /// overwrites blocks the file already has (85 entries; beyond them entries are appended).
  static let abortedFileSize = 4080

  /// Creates ``abortedFile`` filled with zeros (flushed, directory too) unless it exists at full size; called
  /// at every writable open, so the file is there before a commit can fail for want of space.
  static func ensureAbortedFile(directory: String) throws {
    let path = directory + "/" + abortedFile
    var st = stat()
    if stat(path, &st) == 0, Int(st.st_size) >= abortedFileSize { return }
    let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw EventLogError.posix("create \(path)") }
    defer { close(fd) }
    let zeros = [UInt8](repeating: 0, count: abortedFileSize)
    let wrote = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    guard wrote == zeros.count, fsync(fd) == 0 else { throw EventLogError.posix("write \(path)") }
    try fsyncDirectory(directory)
  }

  /// Records that the commit `marker` describes failed, so that ``run(shared:head:pagesInUse:)`` never puts it
  /// back although its pages (written before `mdb_txn_commit` failed, e.g. at its flush) may be on disk. Writes
  /// into the first free slot of ``abortedFile`` (appends when none is free) and flushes it. Returns false when
  /// that failed (the caller then says the commit may be stored).
  static func recordAborted(_ marker: CommitMarker, directory: String) -> Bool {
    let path = directory + "/" + abortedFile
    let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { return false }
    var existing = [UInt8](repeating: 0, count: Int(st.st_size))
    guard existing.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, $0.count, 0) }) == existing.count else { return false }
    let slots = existing.count / abortedEntrySize
    let free = (0..<slots).first { s in existing[(s * abortedEntrySize)..<(s * abortedEntrySize + 8)].allSatisfy { $0 == 0 } } ?? slots
    var entry = [UInt8]()
    entry.appendBE(marker.firstSeq)
    entry.appendBE(marker.committedAtNs)
    entry.append(contentsOf: marker.lastHash)
    let wrote = entry.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(free * abortedEntrySize)) }
    return wrote == entry.count && fdatasync(fd) == 0
  }

  /// The failed commits recorded in `directory` (free slots and a torn last entry are ignored).
  static func loadAborted(directory: String) -> [AbortedKey] {
    guard let data = FileManager.default.contents(atPath: directory + "/" + abortedFile) else { return [] }
    let b = [UInt8](data)
    return stride(from: 0, to: b.count - (abortedEntrySize - 1), by: abortedEntrySize).compactMap { o in
      let seq = b[o..<(o + 8)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
      let at = b[(o + 8)..<(o + 16)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
      return seq == 0 ? nil : AbortedKey(firstSeq: seq, committedAtNs: at, lastHash: Array(b[(o + 16)..<(o + abortedEntrySize)]))
    }
  }

  /// Clears ``abortedFile`` (zeros, same size) once the head has passed every commit it names: a later commit
  /// can no longer start at those seqs.
  static func pruneAborted(directory: String, head: UInt64) throws {
    let entries = loadAborted(directory: directory)
    guard !entries.isEmpty, entries.allSatisfy({ $0.firstSeq <= head }) else { return }
    let path = directory + "/" + abortedFile
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { throw EventLogError.posix("open \(path)") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw EventLogError.posix("stat \(path)") }
    let zeros = [UInt8](repeating: 0, count: Int(st.st_size))
    guard zeros.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, 0) }) == zeros.count, fdatasync(fd) == 0 else {
      throw EventLogError.posix("clear \(path)")
    }
  }
}
