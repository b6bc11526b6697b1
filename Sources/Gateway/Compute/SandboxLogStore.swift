import Foundation
import OpenShellAPI
import SwiftProtobuf
import Synchronization

/// Sandbox log lines, kept per sandbox **outside** the event log (they are output, not facts).
///
/// Storage: `<data dir>/sandbox-logs/<sandbox id>.log`, a sequence of length-delimited
/// `openshell.v1.SandboxLogLine` messages. When the file passes ``maxFileBytes`` (1 MiB) it is renamed to
/// `<id>.log.1` (replacing the previous one), so a sandbox keeps at most 2 MiB of log on disk. The newest
/// ``ringCapacity`` (5,000) lines are kept in memory (loaded from the files on first use) and serve
/// GetSandboxLogs and the tail of WatchSandbox(follow_logs). Deleting a sandbox deletes its logs.
public final class SandboxLogStore: Sendable {
  /// Size at which a sandbox's log file is rotated to `<id>.log.1`, bytes (1 MiB).
  public static let maxFileBytes = 1 << 20
  /// Lines kept in memory per sandbox (the newest 5,000).
  public static let ringCapacity = 5_000

  private struct Buffer {
    var lines: [Openshell_V1_SandboxLogLine] = []
    var total: UInt64 = 0
    var fileBytes = 0
    var handle: FileHandle?
    var watchers: [UUID: AsyncStream<Openshell_V1_SandboxLogLine>.Continuation] = [:]
  }

  /// The directory holding the `<sandbox id>.log` files (`<data dir>/sandbox-logs`).
  public let directory: String
  private let buffers = Mutex<[String: Buffer]>([:])

  /// A store in `directory`, created 0700 if missing.
  public init(directory: String) {
    self.directory = directory
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
  }

  private func path(_ id: String) -> String { "\(directory)/\(id).log" }

  /// Appends lines for a sandbox (sandbox_id and a missing timestamp are filled in) and notifies followers.
  public func append(_ id: String, _ lines: [Openshell_V1_SandboxLogLine]) {
    guard !lines.isEmpty else { return }
    let now = Google_Protobuf_Timestamp(date: Date())
    let stamped = lines.map { line -> Openshell_V1_SandboxLogLine in
      var l = line
      l.sandboxID = id
      if !l.hasEventTime { l.eventTime = now }
      if l.source.isEmpty { l.source = "sandbox" }
      if l.level.isEmpty { l.level = "INFO" }
      return l
    }
    var bytes = Data()
    for l in stamped {
      if let b = try? l.serializedData() {
        var n = UInt64(b.count)
        repeat {
          var byte = UInt8(n & 0x7f)
          n >>= 7
          if n != 0 { byte |= 0x80 }
          bytes.append(byte)
        } while n != 0
        bytes.append(b)
      }
    }
    buffers.withLock { all in
      var b = loaded(id, &all)
      if b.handle == nil {
        // open(2), not FileManager.createFile: that writes a temporary file and fsyncs it, a disk flush under
        // this lock (every sandbox's log lines wait) at each sandbox's first line.
        let fd = open(path(id), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        if fd >= 0 { b.handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true) }
      }
      try? b.handle?.write(contentsOf: bytes)
      b.fileBytes += bytes.count
      if b.fileBytes > Self.maxFileBytes {
        try? b.handle?.close()
        b.handle = nil
        _ = try? FileManager.default.removeItem(atPath: path(id) + ".1")
        try? FileManager.default.moveItem(atPath: path(id), toPath: path(id) + ".1")
        b.fileBytes = 0
      }
      b.lines.append(contentsOf: stamped)
      b.total += UInt64(stamped.count)
      if b.lines.count > Self.ringCapacity { b.lines.removeFirst(b.lines.count - Self.ringCapacity) }
      for w in b.watchers.values { for l in stamped { w.yield(l) } }
      all[id] = b
    }
  }

  /// Convenience: one gateway-side line (source `gateway`).
  public func gateway(_ id: String, _ message: String, level: String = "INFO") {
    append(
      id,
      [
        .with {
          $0.source = "gateway"; $0.level = level; $0.target = "openshell_gateway::compute"; $0.message = message
        }
      ])
  }

  /// The newest lines matching the filters (oldest first), and how many lines the buffer holds in total.
  public func lines(
    _ id: String, limit: Int, since: Date? = nil, sources: [String] = [], minLevel: String = ""
  ) -> (lines: [Openshell_V1_SandboxLogLine], bufferTotal: Int) {
    buffers.withLock { all in
      let b = loaded(id, &all)
      all[id] = b
      let matching = b.lines.filter { Self.matches($0, since: since, sources: sources, minLevel: minLevel) }
      return (limit > 0 ? Array(matching.suffix(limit)) : matching, b.lines.count)
    }
  }

  /// Live lines of one sandbox from now on; the stream ends when the sandbox's logs are removed.
  public func follow(_ id: String) -> AsyncStream<Openshell_V1_SandboxLogLine> {
    let (stream, continuation) = AsyncStream<Openshell_V1_SandboxLogLine>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
    let key = RandomID.make()
    buffers.withLock { all in
      var b = loaded(id, &all)
      b.watchers[key] = continuation
      all[id] = b
    }
    continuation.onTermination = { [weak self] _ in
      _ = self?.buffers.withLock { $0[id]?.watchers.removeValue(forKey: key) }
    }
    return stream
  }

  /// Deletes a sandbox's logs (files and memory) and ends its followers.
  public func remove(_ id: String) {
    let watchers = buffers.withLock { all -> [AsyncStream<Openshell_V1_SandboxLogLine>.Continuation] in
      let b = all.removeValue(forKey: id)
      try? b?.handle?.close()
      return b.map { Array($0.watchers.values) } ?? []
    }
    for w in watchers { w.finish() }
    try? FileManager.default.removeItem(atPath: path(id))
    try? FileManager.default.removeItem(atPath: path(id) + ".1")
  }

  static let levels = ["TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "WARNING": 3, "ERROR": 4]

  static func matches(_ l: Openshell_V1_SandboxLogLine, since: Date?, sources: [String], minLevel: String) -> Bool {
    if let since, l.eventTime.date < since { return false }
    if !sources.isEmpty, !sources.contains(l.source) { return false }
    if let min = levels[minLevel.uppercased()], (levels[l.level.uppercased()] ?? 2) < min { return false }
    return true
  }

  /// The buffer of `id`, loading it from disk the first time.
  private func loaded(_ id: String, _ all: inout [String: Buffer]) -> Buffer {
    if let b = all[id] { return b }
    var b = Buffer()
    for file in [path(id) + ".1", path(id)] {
      guard let data = FileManager.default.contents(atPath: file) else { continue }
      if file == path(id) { b.fileBytes = data.count }
      var i = data.startIndex
      while i < data.endIndex {
        var n: UInt64 = 0
        var shift: UInt64 = 0
        while i < data.endIndex {
          let byte = data[i]
          i += 1
          n |= UInt64(byte & 0x7f) << shift
          shift += 7
          if byte & 0x80 == 0 { break }
        }
        guard n <= UInt64(data.endIndex - i) else { break }
        let end = i + Int(n)
        if let l = try? Openshell_V1_SandboxLogLine(serializedBytes: data[i..<end]) { b.lines.append(l) }
        i = end
      }
    }
    if b.lines.count > Self.ringCapacity { b.lines.removeFirst(b.lines.count - Self.ringCapacity) }
    b.total = UInt64(b.lines.count)
    return b
  }
}
