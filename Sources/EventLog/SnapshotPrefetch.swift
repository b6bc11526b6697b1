/// Hands the newest stored snapshot of a projection to a caller while an open's walk of `data.mdb` goes on
/// (``EventLog/Options/snapshotPrefetch``; issue 14: a start decodes the snapshot on another thread while the
/// walk checks every record, instead of after it).
public struct SnapshotPrefetch: Sendable {
  /// The snapshot name (see ``EventLog/saveSnapshot(name:seq:bytes:keep:)``).
  public var name: String
  /// Called at most once, on the opening thread, with the newest snapshot of ``name`` as the walk read it.
  public var receive: @Sendable (PrefetchedSnapshot) -> Void

  /// Asks for the newest snapshot called `name`; `receive` gets it once, on the opening thread.
  public init(name: String, receive: @escaping @Sendable (PrefetchedSnapshot) -> Void) {
    self.name = name
    self.receive = receive
  }

  /// Keeps the newest snapshot of `name` seen by the walk, which visits keys in order (name || 0 || seq).
  final class Newest {
    let name: String
    let prefix: [UInt8]
    private(set) var found: PrefetchedSnapshot?

    init(name: String) {
      self.name = name
      prefix = Array(name.utf8) + [0]
    }

    func see(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
      guard key.count == prefix.count + 8, key.prefix(prefix.count).elementsEqual(prefix),
        let seq = decodeBE64(UnsafeRawBufferPointer(rebasing: key[prefix.count...]))
      else { return }
      found = PrefetchedSnapshot(name: name, seq: seq, stored: Array(value))
    }
  }
}

/// A stored snapshot value as an open's walk of `data.mdb` read it (the bytes liblmdb serves for it once the
/// log is open: the writer lock is held and nothing has written since).
public struct PrefetchedSnapshot: Sendable {
  /// Its name and the seq it covers.
  public let name: String
  /// The seq of the last record the snapshot covers.
  public let seq: UInt64
  let stored: [UInt8]

  /// Checks its header and checksum and decompresses it, as ``EventLog/snapshot(name:seq:)`` does.
  /// Throws `.corrupt` with ``seq``.
  public func open() throws -> SavedSnapshot {
    try stored.withUnsafeBytes { try SnapshotFormat.decode($0, name: name, seq: seq, pool: DecompressorPool()) }
  }
}
