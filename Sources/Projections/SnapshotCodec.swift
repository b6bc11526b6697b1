import Foundation

/// Encodes `GatewayState` for the log's snapshot store.
///
/// Format: ``BinaryStateEncoding`` (magic `OSB1`; a key table and tagged varint values, map keys
/// sorted), written by this build; the log compresses it. Snapshots written before issue 16 are UTF-8 JSON
/// with sorted keys and base64 `Data`, and stay readable: ``decode(_:)`` tells the two apart by the magic
/// (JSON starts with `{`). Both are deterministic: the bytes are a pure function of the state, so the
/// same log yields a byte-identical snapshot on any machine (Swift dictionaries iterate in a per-process
/// random order, hence sorted keys in both).
public enum SnapshotCodec {
  /// Name under which the gateway projection's snapshots and checkpoint are stored.
  /// Bumped whenever `GatewayState`'s shape changes, so an older snapshot is never decoded as a newer
  /// state (opening then replays from the log, which is always the source of truth). The encoding is told
  /// by the bytes, not the name.
  public static let projectionName = "gateway-state.v4"

  /// The two encodings a snapshot can have.
  public enum Format: String, Sendable {
    /// ``BinaryStateEncoding``, written since issue 16.
    case binary
    /// Sorted-key JSON, written before.
    case json
  }

  /// - Returns: the canonical binary bytes of `state`.
  public static func encode(_ state: GatewayState) -> [UInt8] {
    encode(state, as: .binary)
  }

  /// The canonical bytes of `state` in `format` (the verifier re-encodes a snapshot in its own format).
  public static func encode(_ state: GatewayState, as format: Format) -> [UInt8] {
    switch format {
    case .binary:
      // Plain Codable structs of strings, numbers and Data: their encoding cannot fail.
      return (try? BinaryStateEncoding.encode(state)) ?? []
    case .json:
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys]
      encoder.dataEncodingStrategy = .base64
      return Array((try? encoder.encode(state)) ?? Data())
    }
  }

  /// The format of snapshot `bytes`.
  public static func format(of bytes: [UInt8]) -> Format {
    BinaryStateEncoding.isBinary(bytes) ? .binary : .json
  }

  /// - Throws: `DecodingError` if the bytes are not a snapshot of either format.
  public static func decode(_ bytes: [UInt8]) throws -> GatewayState {
    switch format(of: bytes) {
    case .binary:
      return try BinaryStateEncoding.decode(GatewayState.self, from: bytes)
    case .json:
      let decoder = JSONDecoder()
      decoder.dataDecodingStrategy = .base64
      return try decoder.decode(GatewayState.self, from: Data(bytes))
    }
  }
}
