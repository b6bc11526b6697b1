import Crypto
import EventLog
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Portable, verifiable archive of a log (`openshell-replay export` / `import`), for backups and
/// disaster recovery.
///
/// Format (JSON Lines, UTF-8): line 1 is the header
/// `{"format":"openshell-log-archive","version":1,"records":N,"head_seq":N,"head_hash":"<hex>"}`;
/// then one line per record in seq order (`ArchiveRecord`, payload base64, hashes hex); the last
/// line is the trailer `{"end":true,"records":N,"digest":"<hex SHA-256 of all record lines>"}`.
/// Import re-appends every record with its original timestamp and checks that the log recomputes
/// the same chain hash for each, so a tampered or truncated archive is rejected.
public enum LogArchive {
  /// Value of the header's `format` field; import refuses any other.
  public static let format = "openshell-log-archive"

  /// Line 1 of an archive.
  public struct Header: Codable, Sendable {
    /// Always ``LogArchive/format``.
    public var format: String
    /// Archive format version; 1 is the only one written and read.
    public var version: Int
    /// Number of record lines that follow.
    public var records: UInt64
    /// Seq of the last record in the archive (equal to `records`: archives start at seq 1).
    public var head_seq: UInt64
    /// Chain hash of that record, hex (32 bytes); all zeros for an empty log.
    public var head_hash: String
  }

  /// One record line: the stored record with its header fields (snake_case JSON keys as written).
  public struct ArchiveRecord: Codable, Sendable {
    /// Sequence number, from 1.
    public var seq: UInt64
    /// Record timestamp, ns since the Unix epoch (UTC); re-appended unchanged by import.
    public var ts: UInt64
    /// Dotted event type, e.g. `sandbox.requested`.
    public var type: String
    /// Aggregate kind, e.g. `sandbox`.
    public var agg_kind: String
    /// Aggregate id.
    public var agg_id: String
    /// Authenticated identity that caused the event, or `system`.
    public var actor: String
    /// Client request id that made the mutation idempotent; empty when none.
    public var request_id: String
    /// Payload schema version (see `gatewayEventSchemaVersion`).
    public var payload_version: UInt16
    /// Payload bytes (serialized `GatewayEvent`), base64.
    public var payload: String
    /// Chain hash of the record, hex; import checks the log recomputes it.
    public var hash: String
  }

  /// Last line of an archive; its absence means the archive is truncated.
  public struct Trailer: Codable, Sendable {
    /// Always true (marks the line as the trailer).
    public var end: Bool
    /// Number of record lines written.
    public var records: UInt64
    /// Hex SHA-256 over all record lines (each with its newline), in order.
    public var digest: String
  }

  /// A malformed, truncated or tampered archive, or a file that cannot be written or read.
  public struct ArchiveError: Error, CustomStringConvertible, Sendable {
    /// One readable line naming the file, line or seq at fault.
    public let message: String
    /// An error with this message.
    public init(message: String) { self.message = message }
    /// The message.
    public var description: String { message }
  }

  /// Writes the log (records 1...`through`, default the head) to `file` (created or truncated). Returns
  /// the number of records.
  /// - Throws: `EventLogError` on read failure, `ArchiveError` on write failure.
  @discardableResult
  public static func export(
    _ log: EventLog, to file: String, through: UInt64? = nil, overwrite: Bool = false, progress: ((UInt64, UInt64) -> Void)? = nil
  ) throws -> UInt64 {
    let head = min(through ?? log.headSeq, log.headSeq)
    let headHash = head == log.headSeq ? log.headHash : (try log.record(at: head)?.hash ?? [UInt8](repeating: 0, count: 32))
    // An archive holds every record (sealed secrets included): owner-only (0600), written beside the
    // target and renamed into place, so a failed export leaves no partial archive and never clobbers one.
    if !overwrite, FileManager.default.fileExists(atPath: file) {
      throw ArchiveError(message: "\(file) already exists; remove it first (or pass --force)")
    }
    let partial = file + ".partial"
    unlink(partial)
    let fd = open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw ArchiveError(message: "cannot create \(partial): \(String(cString: strerror(errno)))") }
    let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    var done = false
    defer {
      try? handle.close()
      if !done { unlink(partial) }
    }
    let count = try write(log, head: head, headHash: headHash, to: handle, progress: progress)
    try handle.synchronize()
    guard rename(partial, file) == 0 else { throw ArchiveError(message: "cannot write \(file): \(String(cString: strerror(errno)))") }
    done = true
    return count
  }

  /// Writes header, records 1...`head` and trailer to `handle`; returns the number of records.
  private static func write(
    _ log: EventLog, head: UInt64, headHash: [UInt8], to handle: FileHandle, progress: ((UInt64, UInt64) -> Void)?
  ) throws -> UInt64 {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let header = Header(format: format, version: 1, records: head, head_seq: head, head_hash: hexString(headHash))
    try handle.write(contentsOf: encoder.encode(header) + Data("\n".utf8))
    var digest = SHA256()
    var count: UInt64 = 0
    var buffer = Data()
    try log.forEach(from: 1, through: head) { r in
      let line =
        try encoder.encode(
          ArchiveRecord(
            seq: r.seq, ts: r.timestampNs, type: r.type, agg_kind: r.aggregate.kind, agg_id: r.aggregate.id,
            actor: r.actor, request_id: r.requestID, payload_version: r.payloadVersion,
            payload: Data(r.payload).base64EncodedString(), hash: hexString(r.hash))) + Data("\n".utf8)
      digest.update(data: line)
      buffer.append(line)
      count += 1
      if buffer.count > 1 << 20 {
        try handle.write(contentsOf: buffer)
        buffer.removeAll(keepingCapacity: true)
        progress?(count, head)
      }
    }
    try handle.write(contentsOf: buffer)
    let trailer = Trailer(end: true, records: count, digest: hexString(digest.finalize()))
    try handle.write(contentsOf: encoder.encode(trailer) + Data("\n".utf8))
    progress?(count, head)
    return count
  }

  /// Creates a new log in `directory` (which must not hold a log yet) from an archive, as a bulk load
  /// (``EventLog/openForBulkLoad(directory:options:)``): durable once it returns; an import that fails or is
  /// killed midway leaves a directory that every open refuses ("interrupted bulk load").
  /// - Throws: `ArchiveError` for a malformed, truncated or tampered archive (naming the line/seq),
  ///   `EventLogError` from the log.
  @discardableResult
  public static func importArchive(from file: String, into directory: String, options: EventLog.Options = .init(), progress: ((UInt64, UInt64) -> Void)? = nil)
    throws -> UInt64
  {
    guard let data = FileManager.default.contents(atPath: file) else { throw ArchiveError(message: "cannot read \(file)") }
    if FileManager.default.fileExists(atPath: directory + "/data.mdb") {
      throw ArchiveError(message: "\(directory) already holds a log; import into a new directory")
    }
    let decoder = JSONDecoder()
    var lines = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true)
    guard let first = lines.first, let header = try? decoder.decode(Header.self, from: Data(first)), header.format == format else {
      throw ArchiveError(message: "\(file) is not an \(format)")
    }
    guard header.version == 1 else { throw ArchiveError(message: "unsupported archive version \(header.version)") }
    guard let last = lines.last, let trailer = try? decoder.decode(Trailer.self, from: Data(last)), trailer.end else {
      throw ArchiveError(message: "archive is truncated: no trailer line")
    }
    lines = Array(lines.dropFirst().dropLast())
    guard UInt64(lines.count) == trailer.records, trailer.records == header.records else {
      throw ArchiveError(message: "archive is truncated: header says \(header.records) records, found \(lines.count)")
    }
    var digest = SHA256()
    for line in lines { digest.update(data: Data(line) + Data("\n".utf8)) }
    guard hexString(digest.finalize()) == trailer.digest else {
      throw ArchiveError(message: "archive digest mismatch: the file was modified or damaged")
    }
    // A bulk load (issue 14): commits unflushed, one flush at the end; until then the directory carries a
    // marker, so an import that fails or is killed midway is refused by every open instead of being used as a
    // silently shorter log.
    let log = try EventLog.openForBulkLoad(directory: directory, options: options)
    defer { log.close() }
    var pending: [(NewEvent, ArchiveRecord)] = []
    func flush() throws {
      guard !pending.isEmpty else { return }
      let range = try log.appendSync(pending.map(\.0))
      let written = try log.records(from: range.lowerBound, through: range.upperBound)
      for (record, (_, original)) in zip(written, pending) {
        guard record.seq == original.seq, hexString(record.hash) == original.hash else {
          throw ArchiveError(message: "seq \(original.seq): hash chain mismatch on import (archive tampered)")
        }
      }
      progress?(range.upperBound, header.records)
      pending.removeAll(keepingCapacity: true)
    }
    for (i, line) in lines.enumerated() {
      guard let r = try? decoder.decode(ArchiveRecord.self, from: Data(line)), let payload = Data(base64Encoded: r.payload) else {
        throw ArchiveError(message: "archive line \(i + 2) is not a record")
      }
      let event = NewEvent(
        type: r.type, aggregate: AggregateRef(kind: r.agg_kind, id: r.agg_id), actor: r.actor, requestID: r.request_id,
        payloadVersion: r.payload_version, payload: Array(payload), timestampNs: r.ts)
      pending.append((event, r))
      if pending.count >= 4096 { try flush() }
    }
    try flush()
    try log.finishBulkLoad()
    return log.headSeq
  }
}
