import EventLog
import Foundation
import Projections

/// The newest gateway snapshot, checked, decompressed and decoded on a thread of its own from the moment the
/// log's open has read it, while that open's walk of `data.mdb` still checks every record (issue 14: restart
/// time; set ``prefetch`` as `EventLog.Options.snapshotPrefetch`). ``StateLoader/load(_:progress:decodedAhead:)``
/// uses the result for that seq, with the checks of a snapshot it reads itself.
public final class SnapshotDecodeAhead: @unchecked Sendable {
  private let lock = NSLock()
  private var pending: (seq: UInt64, result: ConcurrentResult<(chainHash: [UInt8]?, state: GatewayState)>)?

  public init() {}

  /// What to set as `EventLog.Options.snapshotPrefetch`.
  public var prefetch: SnapshotPrefetch {
    SnapshotPrefetch(name: SnapshotCodec.projectionName) { [self] snapshot in
      let result = ConcurrentResult { () throws -> (chainHash: [UInt8]?, state: GatewayState) in
        let saved = try snapshot.open()
        return (saved.chainHash, try SnapshotCodec.decode(saved.bytes))
      }
      lock.withLock { pending = (snapshot.seq, result) }
    }
  }

  /// The snapshot at `seq` as decoded ahead (waits for it), or nil when none was prefetched for `seq`.
  /// Rethrows what its check (`EventLogError`) or its decode threw.
  func take(seq: UInt64) throws -> (chainHash: [UInt8]?, state: GatewayState)? {
    guard let p = lock.withLock({ pending }), p.seq == seq else { return nil }
    return try p.result.value()
  }
}
