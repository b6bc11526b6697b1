import EventLog
import Foundation
import GRPCCore
import LogTools
import Logging
import OpenShellAPI
import Projections
import Testing

@testable import Gateway

/// Issue 17: a gateway never serves a log it cannot trust, and never turns a damaged file into a new gateway.
@Suite(.serialized) struct DamagedLogStartupTests {
  /// A real gateway log: 12 sandboxes and 4 workspaces created over the API, a shutdown snapshot, then a tail
  /// of records after it (so start-up replays records too). Returns the data dir and the trusted state.
  static func makeLog() async throws -> (dir: String, state: [UInt8]) {
    // Without shutdown checkpoints: the flip campaign's thresholds assume this exact record layout.
    let gw = try await TestGateway.start { $0.checkpointInterval = 0 }
    try await gw.withClient { api in
      for w in 0..<4 { _ = try await api.createWorkspace(.with { $0.name = "team-\(w)" }) }
      for i in 0..<12 {
        _ = try await api.createSandbox(
          .with {
            $0.name = "box-\(i)"
            $0.labels = ["n": "\(i)", "purpose": String(repeating: "x", count: 20 * i)]
            $0.workspaceScope = .ws("team-\(i % 4)")
          })
      }
    }
    await gw.stop()  // writes the snapshot
    let again = try await TestGateway.start(dataDirectory: gw.dataDirectory) { $0.checkpointInterval = 0 }
    try await again.withClient { api in
      for i in 0..<5 {
        _ = try await api.deleteSandbox(
          .with {
            $0.name = "box-\(i)"; $0.workspaceScope = .ws("team-\(i % 4)")
          })
      }
    }
    await again.stop()  // a second, newer snapshot; the first one stays as an older fallback
    // Records after the newest snapshot, so that start-up replays a tail.
    let (log, store) = try open(gw.dataDirectory)
    defer { log.close() }
    _ = try await store.record([
      GatewayEvent(
        .gatewayConfigured(
          .with {
            $0.port = 1; $0.authMode = "mtls"
          }))
    ])
    _ = try await store.record([
      GatewayEvent(
        .gatewayConfigured(
          .with {
            $0.port = 2; $0.authMode = "mtls"
          }))
    ])
    return (gw.dataDirectory, SnapshotCodec.encode(await store.state))
  }

  static func open(_ dir: String) throws -> (EventLog, GatewayStore) {
    try LogStartup.open(dataDirectory: dir, options: .init(), metrics: GatewayMetrics(), logger: Logger(label: "test"))
  }

  /// A fresh data dir holding only `bytes` as `log/data.mdb` (no pki, so only the log decides).
  static func damagedCopy(_ bytes: [UInt8]) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dmg-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir + "/log", withIntermediateDirectories: true)
    try Data(bytes).write(to: URL(fileURLWithPath: dir + "/log/data.mdb"))
    return dir
  }

  /// `identical`: started with the undamaged log's state, and the full `openshell-replay verify` check of the
  /// damaged copy passes too (the flip hit bytes the log does not use); `identicalButVerifyFails`: started
  /// although verification finds damage.
  /// `fellBack`: a damaged snapshot was skipped with a warning and the state rebuilt from older data.
  enum Outcome: Equatable {
    case refused(String)
    case identical
    case fellBack(String)
    case identicalButVerifyFails(String)
    case different
  }

  static func start(_ bytes: [UInt8], expected: [UInt8]) async throws -> Outcome {
    let dir = try damagedCopy(bytes)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    do {
      let (log, store) = try open(dir)
      defer { log.close() }
      guard SnapshotCodec.encode(await store.state) == expected else { return .different }
      if !store.startupWarnings.isEmpty { return .fellBack(store.startupWarnings.joined()) }
      let full = try LogVerifier.verify(log)
      return full.ok ? .identical : .identicalButVerifyFails("\(full.firstBadSeq.map { "seq \($0): " } ?? "")\(full.problem ?? "snapshot differs")")
    } catch let e as GatewayStartupError {
      return .refused(e.description)
    }
  }

  static func checkRefusal(_ message: String, _ what: String) {
    #expect(message.contains("data.mdb"), "\(what): names the file: \(message)")
    #expect(message.contains("seq ") || message.contains("page ") || message.contains("empty"), "\(what): names the seq or page: \(message)")
    #expect(message.contains("openshell-replay verify") && message.contains("openshell-replay restore"), "\(what): names the remedy: \(message)")
    #expect(!message.contains("\n"), "\(what): one line")
  }

  /// 30 single-bit flips spread over the file: each is refused with the one message, or (a flip in space the
  /// log does not use) starts with exactly the state of the undamaged log — never a crash, never a different
  /// state. Truncations and an empty file are always refused.
  @Test func byteFlipsAndTruncationsAreRefusedOrHarmless() async throws {
    let (dir, expected) = try await Self.makeLog()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/log/data.mdb")))
    #expect(try await Self.start(original, expected: expected) == .identical)
    #expect(try await Self.start(original, expected: expected) == .identical, "the check changes nothing")
    let report = try LMDBFileCheck.check(path: dir + "/log/data.mdb")
    print("log file: \(original.count) bytes, \(report.lastPage + 1) pages, \(report.treePages) in trees, \(report.freePages) free")
    var refused = 0
    var identical = 0
    var fellBack = 0
    var different: [Int] = []
    var unverified: [String] = []
    var x: UInt64 = 0x9E37_79B9_7F4A_7C15
    let flips = 30
    for i in 0..<flips {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17
      let stride = original.count / flips
      let at = i * stride + Int(x % UInt64(stride))
      var bytes = original
      bytes[at] ^= UInt8(1 << Int((x >> 32) % 8))
      switch try await Self.start(bytes, expected: expected) {
      case .refused(let m):
        refused += 1
        Self.checkRefusal(m, "flip at byte \(at)")
      case .identical: identical += 1
      case .fellBack(let w):
        fellBack += 1
        #expect(w.contains("openshell-replay rebuild"), "\(w)")
      case .identicalButVerifyFails(let why): unverified.append("byte \(at): \(why)")
      case .different: different.append(at)
      }
    }
    print(
      "byte flips: \(flips) tried, \(refused) refused, \(identical) started with identical state (verify passes too: unused bytes), \(fellBack) fell back from a damaged snapshot with a warning, \(unverified.count) started although verify finds damage, \(different.count) silently different"
    )
    #expect(different.isEmpty, "flips at \(different) started with a different state")
    #expect(unverified.isEmpty, "started on a log that verify rejects: \(unverified)")
    #expect(refused >= 2, "flips that hit the log's pages are refused (got \(refused); the file is half free pages)")
    // Flips aimed at records (a byte of a stored record: a version 3 value starts with its version byte 0x03
    // and its 8-byte big-endian timestamp, found by the timestamps the log holds): every record is
    // checked at start-up, so each is refused — unless it hit a stale copy on a free page (then harmless).
    let starts = try Self.recordOffsets(in: original, logDirectory: dir + "/log")
    #expect(starts.count >= 20, "records located in the file: \(starts.count)")
    var recordRefused = 0
    var recordHarmless = 0
    for (n, s) in starts.enumerated() where n % max(1, starts.count / 60) == 0 {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17
      var bytes = original
      bytes[s + Int(x % 40)] ^= 0x04
      switch try await Self.start(bytes, expected: expected) {
      case .refused(let m):
        recordRefused += 1
        Self.checkRefusal(m, "record flip at byte \(s)")
      case .identical: recordHarmless += 1
      case let other: Issue.record("record flip at byte \(s): \(other)")
      }
    }
    print("record flips: \(recordRefused + recordHarmless) tried, \(recordRefused) refused, \(recordHarmless) harmless (stale copies)")
    #expect(recordRefused >= 10)
    // Truncations (inside the last page, at half, to one page) and an empty file: never a new gateway.
    for cut in [original.count - 100, original.count / 2, 4096, 0] {
      switch try await Self.start(Array(original.prefix(cut)), expected: expected) {
      case .refused(let m): Self.checkRefusal(m, "truncated to \(cut) bytes")
      case let other: Issue.record("a log truncated to \(cut) bytes started: \(other)")
      }
    }
  }

  /// A flipped database name in LMDB's main tree (e.g. "meta") would make a writer create an empty database in
  /// its place — a lost log that looks like a new gateway. It is refused naming the missing database.
  @Test func damagedDatabaseNamesAreRefusedNotRecreated() async throws {
    let (dir, expected) = try await Self.makeLog()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/log/data.mdb")))
    for name in ["meta", "events", "snapshots", "checkpoints", "chain"] {
      let key = Array(name.utf8)
      var bytes = original
      var hits = 0
      // A sub-database node in the main tree: flags F_SUBDATA (2), key size, then the name.
      for i in 8..<(bytes.count - key.count)
      where Array(bytes[i..<(i + key.count)]) == key
        && bytes[i - 4] == 2 && bytes[i - 3] == 0 && Int(bytes[i - 2]) == key.count && bytes[i - 1] == 0
      {
        // The name's last byte: the main tree's keys stay in order (a first-byte flip can sort the name
        // before its neighbour, which is refused as a damaged page instead).
        bytes[i + key.count - 1] ^= 0x01
        hits += 1
      }
      #expect(hits >= 1, "\(name) found")
      switch try await Self.start(bytes, expected: expected) {
      case .refused(let m):
        Self.checkRefusal(m, "damaged name \(name)")
        #expect(m.contains("no '\(name)' database"), "\(m)")
      case let other: Issue.record("a log whose '\(name)' database name is damaged started: \(other)")
      }
    }
  }

  /// A damaged snapshot costs only a longer replay: start-up falls back to the records and says so.
  @Test func damagedSnapshotFallsBackToReplay() async throws {
    let (dir, expected) = try await Self.makeLog()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/log/data.mdb")))
    let magic = Array("OSSN".utf8)
    var hits = 0
    for i in 0..<(bytes.count - 80) where Array(bytes[i..<(i + 4)]) == magic {
      bytes[i + 70] ^= 0x20  // inside the stored state, after the header and chain hash
      hits += 1
    }
    #expect(hits >= 1)
    let copy = try Self.damagedCopy(bytes)
    defer { try? FileManager.default.removeItem(atPath: copy) }
    let (log, store) = try Self.open(copy)
    defer { log.close() }
    #expect(SnapshotCodec.encode(await store.state) == expected)
    let warning = store.startupWarnings.joined()
    #expect(warning.contains("snapshot at seq") && warning.contains("rebuilt from"), "\(store.startupWarnings)")
    #expect(warning.contains("openshell-replay rebuild"))
  }

  /// An initialised gateway whose log file vanished is refused, not started as a new gateway.
  @Test func missingLogOfAnInitialisedGatewayIsRefused() async throws {
    let gw = try await TestGateway.start()
    await gw.stop()
    defer { try? FileManager.default.removeItem(atPath: gw.dataDirectory) }
    try FileManager.default.removeItem(atPath: gw.dataDirectory + "/log/data.mdb")
    #expect(throws: GatewayStartupError.self) { _ = try Self.open(gw.dataDirectory) }
    #expect(!FileManager.default.fileExists(atPath: gw.dataDirectory + "/log/data.mdb"))
  }

  /// Issue 14 moved the start's record checksums into the walk of data.mdb (one read of the file): a sound log
  /// is checked through its head at open, and one flipped byte inside a record in the middle of a longer log
  /// (2,001 records: a multi-level tree) is refused at start naming that seq, its page and the file.
  @Test func aFlippedRecordInTheMiddleIsRefusedNamingItsSeq() async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mid-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var options = EventLog.Options()
    options.durability = .noSync
    let target: UInt64 = 1001
    do {
      let (log, store) = try LogStartup.open(dataDirectory: dir, options: options, metrics: GatewayMetrics(), logger: Logger(label: "test"))
      defer { log.close() }
      func configured(_ port: Int) -> GatewayEvent {
        GatewayEvent(
          .gatewayConfigured(
            .with {
              $0.port = UInt32(port); $0.authMode = "mtls"
            }))
      }
      for batch in 0..<10 { _ = try await store.record((1...100).map { configured(batch * 100 + $0) }) }
      _ = try await store.record([configured(60_000)])  // seq 1001, alone in its commit: its own timestamp
      for batch in 10..<20 { _ = try await store.record((1...100).map { configured(batch * 100 + $0) }) }
      #expect(log.headSeq == 2001)
    }
    let file = dir + "/log/data.mdb"
    var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
    let ts = try {
      var o = EventLog.Options()
      o.readOnly = true
      let log = try EventLog.open(directory: dir + "/log", options: o)
      defer { log.close() }
      return try #require(try log.record(at: target)).timestampNs
    }()
    var hits = 0
    for i in 0..<(bytes.count - 16) {
      // v2 (compressed or raw: flags 0 or 1, timestamp at 2) or v3 (timestamp at 1)
      let at = bytes[i] == 0x02 && bytes[i + 1] <= 1 ? 2 : bytes[i] == 0x03 ? 1 : 0
      guard at > 0 else { continue }
      var t: UInt64 = 0
      for k in at..<(at + 8) { t = t << 8 | UInt64(bytes[i + k]) }
      if t == ts {
        bytes[i + 13] ^= 0x08  // inside the stored body
        hits += 1
      }
    }
    #expect(hits >= 1)
    do {
      let (log, _) = try Self.open(dir)
      #expect(log.recordsCheckedAtOpen == 2001, "the walk checked every record; the store's load read none again")
      log.close()
    }
    try Data(bytes).write(to: URL(fileURLWithPath: file))
    do {
      let (log, _) = try Self.open(dir)
      log.close()
      Issue.record("a log with a damaged record \(target) started")
    } catch let e as GatewayStartupError {
      Self.checkRefusal(e.description, "record \(target)")
      #expect(e.description.contains("data.mdb is damaged at seq \(target) (page "), "\(e.description)")
      #expect(e.description.contains("record \(target): checksum mismatch"), "\(e.description)")
    }
  }

  /// Offsets in `file` (a copy of `logDirectory`'s data.mdb) where a version 2 or 3 record value starts: its
  /// version byte (0x02 then flags 0, or 0x03) and the 8-byte big-endian timestamp of a record the log holds
  /// (live copies and stale ones on free pages alike).
  static func recordOffsets(in file: [UInt8], logDirectory: String) throws -> [Int] {
    var options = EventLog.Options()
    options.readOnly = true
    let log = try EventLog.open(directory: logDirectory, options: options)
    defer { log.close() }
    var timestamps = Set<UInt64>()
    try log.forEach(from: 1) { rec in timestamps.insert(rec.timestampNs) }
    var offsets: [Int] = []
    var i = 0
    while i + 10 + 40 <= file.count {
      let ts = file[i] == 0x02 && file[i + 1] == 0x00 ? 2 : file[i] == 0x03 ? 1 : 0
      if ts > 0 {
        var t: UInt64 = 0
        for k in ts..<(ts + 8) { t = t << 8 | UInt64(file[i + k]) }
        if timestamps.contains(t) { offsets.append(i) }
      }
      i += 1
    }
    return offsets
  }
}
