import Foundation

/// Encodes `GatewayState` for the log's snapshot store.
///
/// Format: UTF-8 JSON with sorted keys (`JSONEncoder.OutputFormatting.sortedKeys`), prefixed by
/// nothing; the log compresses it. Sorted keys make the bytes a pure function of the state, so the
/// same log yields a byte-identical snapshot on any machine (Swift dictionaries iterate in a
/// per-process random order, hence no unsorted encoding anywhere). `Data` fields are base64.
public enum SnapshotCodec {
  /// Name under which the gateway projection's snapshots and checkpoint are stored.
  /// Bumped whenever `GatewayState`'s shape changes, so an older snapshot is never decoded as a newer
  /// state (opening then replays from the log, which is always the source of truth).
  public static let projectionName = "gateway-state.v3"

  /// - Returns: the canonical bytes of `state`.
  public static func encode(_ state: GatewayState) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    encoder.dataEncodingStrategy = .base64
    // Encoding plain Codable structs of strings, numbers and Data cannot fail.
    return Array((try? encoder.encode(state)) ?? Data())
  }

  /// - Throws: `DecodingError` if the bytes are not a snapshot of this format.
  public static func decode(_ bytes: [UInt8]) throws -> GatewayState {
    let decoder = JSONDecoder()
    decoder.dataDecodingStrategy = .base64
    return try decoder.decode(GatewayState.self, from: Data(bytes))
  }
}
