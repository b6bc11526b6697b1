import CLMDB

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The one error type thrown by the event log.
///
/// Every failure carries a machine-readable ``Code``, a human-readable message, and where it came from:
/// `lmdbCode` is the raw return code of the failing LMDB call (negative `MDB_*` codes, see `lmdb.h`, or a
/// positive errno that LMDB passed through), `errno` is the OS error number when one applies.
/// `seq` names the offending record for `.corrupt`; `aggregate`/`expected`/`actual` describe a `.conflict`.
public struct EventLogError: Error, Sendable, CustomStringConvertible, Equatable {
  /// What went wrong, coarse-grained, for programmatic handling.
  public enum Code: String, Sendable {
    /// An `expecting:` version did not match the aggregate's current version (optimistic concurrency).
    case conflict
    /// The LMDB map could not grow any further (`maxMapSize` reached).
    case mapFull
    /// The file system is full (`ENOSPC`/`EDQUOT` from the commit); nothing of the batch was written.
    case diskFull
    /// Stored bytes failed a check (magic, length, checksum, chain, decompression); `seq` names the record.
    case corrupt
    /// Another process (or another open in this process) holds the writer lock on the directory.
    case locked
    /// The directory, log or a requested item does not exist.
    case notFound
    /// The caller passed something unusable (empty batch, oversized field, bad name).
    case invalidArgument
    /// The log was closed.
    case closed
    /// An operating-system I/O error other than a full disk.
    case io
    /// Any other LMDB failure.
    case storage
    /// A write was attempted on a log opened with `Options.readOnly`.
    case readOnly
  }

  /// The kind of failure.
  public let code: Code
  /// Human-readable explanation (never contains payload bytes).
  public let message: String
  /// Raw LMDB return code of the failing call, if an LMDB call failed.
  public let lmdbCode: Int32?
  /// OS errno, if one applies.
  public let errno: Int32?
  /// Sequence number of the bad record when `code == .corrupt` (and known).
  public let seq: UInt64?
  /// For `.conflict`: the aggregate whose version did not match.
  public let aggregate: AggregateRef?
  /// For `.conflict`: what the caller expected.
  public let expected: ExpectedVersion?
  /// For `.conflict`: the aggregate's actual version (number of events) at check time.
  public let actual: UInt64?

  /// An error of `code` with its one-line `message`; the optional fields name the LMDB return code, the errno, the seq, and for `.conflict` the aggregate with its expected and actual versions.
  public init(
    code: Code, message: String, lmdbCode: Int32? = nil, errno: Int32? = nil, seq: UInt64? = nil,
    aggregate: AggregateRef? = nil, expected: ExpectedVersion? = nil, actual: UInt64? = nil
  ) {
    self.code = code
    self.message = message
    self.lmdbCode = lmdbCode
    self.errno = errno
    self.seq = seq
    self.aggregate = aggregate
    self.expected = expected
    self.actual = actual
  }

  /// `EventLogError.<code>: <message>` followed by the LMDB code, errno and seq when set.
  public var description: String {
    var s = "EventLogError.\(code.rawValue): \(message)"
    if let lmdbCode { s += " [lmdb \(lmdbCode)]" }
    if let errno { s += " [errno \(errno)]" }
    if let seq { s += " [seq \(seq)]" }
    return s
  }

  static func closed() -> EventLogError { EventLogError(code: .closed, message: "the event log is closed") }

  static func corrupt(_ seq: UInt64?, _ reason: String) -> EventLogError {
    EventLogError(code: .corrupt, message: reason, seq: seq)
  }

  static func invalid(_ message: String) -> EventLogError {
    EventLogError(code: .invalidArgument, message: message)
  }

  /// Maps an LMDB return code (see `mdb_strerror`) to an error. Positive codes are errno values.
  static func lmdb(_ rc: Int32, _ operation: String) -> EventLogError {
    let text = String(cString: mdb_strerror(rc))
    let msg = "\(operation): \(text)"
    switch rc {
    case MDB_MAP_FULL:
      return EventLogError(code: .mapFull, message: msg, lmdbCode: rc)
    case MDB_NOTFOUND:
      return EventLogError(code: .notFound, message: msg, lmdbCode: rc)
    case MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_INVALID, MDB_VERSION_MISMATCH, MDB_BAD_TXN, MDB_PANIC:
      return EventLogError(code: .corrupt, message: msg, lmdbCode: rc)
    case ENOSPC, EDQUOT:
      return EventLogError(code: .diskFull, message: msg, lmdbCode: rc, errno: rc)
    case ENOENT:
      return EventLogError(code: .notFound, message: msg, lmdbCode: rc, errno: rc)
    case EACCES, EROFS, EPERM:
      return EventLogError(code: .readOnly, message: msg, lmdbCode: rc, errno: rc)
    case let c where c > 0:
      return EventLogError(code: .io, message: msg, lmdbCode: rc, errno: rc)
    default:
      return EventLogError(code: .storage, message: msg, lmdbCode: rc)
    }
  }

  /// An error from a plain POSIX call, using the current `errno`.
  static func posix(_ operation: String, code: Code = .io) -> EventLogError {
    let e = currentErrno()
    let text = String(cString: strerror(e))
    let c: Code = (e == ENOSPC || e == EDQUOT) ? .diskFull : code
    return EventLogError(code: c, message: "\(operation): \(text)", errno: e)
  }
}

/// The calling thread's `errno` (a free function so it does not collide with `EventLogError.errno`).
func currentErrno() -> Int32 { errno }
