import CLMDB
import Foundation
import Testing

@testable import EventLog

/// `checkRecordsAtOpen` (issue 14: a start reads `data.mdb` once): the structural walk before liblmdb maps the
/// file also checks every record, with the findings of `verify(checksumsOnly:)` (issue 17).
@Suite struct OpenCheckTests {
  /// A log of 3,000 records (a branch page over ~100 leaf pages) with two incompressible records in the middle:
  /// seq 1500 on a leaf page and seq 1501 on overflow pages. Returns the two values as stored.
  static func makeLog(_ dir: String) async throws -> [UInt64: [UInt8]] {
    let log = try openLog(dir) { $0.durability = .noSync }
    defer { log.close() }
    for start in stride(from: 1, to: 1500, by: 500) {
      try await log.append((start..<min(start + 500, 1500)).map { event(payload: String(decoding: jsonPayload($0), as: UTF8.self)) })
    }
    for size in [200, 3000] {
      var e = event()
      e.payload = noise(size, seed: UInt64(size))
      try await log.append([e])
    }
    try await log.append((1502...3000).map { event(payload: "later \($0)") })
    #expect(log.headSeq == 3000)
    var stored: [UInt64: [UInt8]] = [:]
    for seq: UInt64 in [1500, 1501] {
      stored[seq] = try #require(try log.shared.env.withRead { try $0.get(log.shared.env.dbs.events, seqKey(seq)) })
    }
    return stored
  }

  static func openChecked(_ dir: String) throws -> EventLog { try openLog(dir) { $0.checkRecordsAtOpen = true } }

  /// Flips two bytes of every copy of a 16-byte slice from the middle of `value` in `dir`'s data.mdb.
  static func flip(in dir: String, value: [UInt8]) throws {
    let path = dir + "/data.mdb"
    var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    let slice = Array(value[(value.count / 2)..<(value.count / 2 + 16)])
    var hits = 0
    var i = 0
    while i + slice.count <= bytes.count {
      if bytes[i] == slice[0], Array(bytes[i..<(i + slice.count)]) == slice {
        bytes[i + 8] ^= 0x10
        hits += 1
      }
      i += 1
    }
    #expect(hits >= 1)
    try Data(bytes).write(to: URL(fileURLWithPath: path))
  }

  @Test func aSoundLogIsCheckedThroughItsHead() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    _ = try await Self.makeLog(tmp.log)
    let log = try Self.openChecked(tmp.log)
    defer { log.close() }
    #expect(log.recordsCheckedAtOpen == 3000)
    #expect(try log.verify().isOK)
    let plain = try openLog(tmp.path + "/other")
    defer { plain.close() }
    #expect(plain.recordsCheckedAtOpen == nil, "a new log: nothing walked")
  }

  /// A flipped byte inside a record in the middle of the log (leaf page and overflow page) refuses the open
  /// naming the file, that seq and its page; the open without record checks still works and `verify` names
  /// the same seq.
  @Test(arguments: [UInt64(1500), 1501])
  func aFlippedRecordIsRefusedAtItsSeq(target: UInt64) async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let stored = try await Self.makeLog(tmp.log)
    try Self.flip(in: tmp.log, value: try #require(stored[target]))
    let e = expectEventLogError(.corrupt) { _ = try Self.openChecked(tmp.log) }
    #expect(e?.seq == target)
    let message = e?.message ?? ""
    #expect(message.contains("data.mdb is damaged at seq \(target) (page "), "\(message)")
    #expect(message.contains("record \(target): checksum mismatch"), "\(message)")
    let log = try openLog(tmp.log)
    defer { log.close() }
    #expect(log.recordsCheckedAtOpen == nil)
    #expect(try log.verify(checksumsOnly: true).firstBad?.seq == target)
  }

  /// `snapshotPrefetch`: the walk reads the snapshots before the records and hands over the newest snapshot of
  /// the name only (not an older one, not another name's), with the bytes `snapshot(name:seq:)` returns; it
  /// is handed over even when a record later fails (it was read first).
  @Test func theNewestSnapshotIsHandedOverBeforeTheRecordsAreWalked() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let stored = try await Self.makeLog(tmp.log)
    let big = noise(20_000, seed: 5)  // on overflow pages
    do {
      let log = try openLog(tmp.log)
      defer { log.close() }
      try log.saveSnapshot(name: "state", seq: 1000, bytes: Array("older".utf8))
      try log.saveSnapshot(name: "state", seq: 2000, bytes: big)
      try log.saveSnapshot(name: "statf", seq: 2500, bytes: Array("another name".utf8))
    }
    final class Received: @unchecked Sendable {
      let lock = NSLock()
      var items: [PrefetchedSnapshot] = []
    }
    func open(_ received: Received) throws -> EventLog {
      try openLog(tmp.log) {
        $0.checkRecordsAtOpen = true
        $0.snapshotPrefetch = SnapshotPrefetch(name: "state") { p in received.lock.withLock { received.items.append(p) } }
      }
    }
    let first = Received()
    do {
      let log = try open(first)
      defer { log.close() }
      #expect(first.items.map(\.seq) == [2000])
      #expect(try first.items.first?.open().bytes == big)
      #expect(try first.items.first?.open() == log.snapshot(name: "state", seq: 2000))
    }
    try Self.flip(in: tmp.log, value: try #require(stored[1500]))
    let second = Received()
    let e = expectEventLogError(.corrupt) { _ = try open(second) }
    #expect(e?.seq == 1500)
    #expect(second.items.map(\.seq) == [2000], "handed over before the walk reached the records")
  }

  /// Version 1 records (the fixture of the first format, magic "OSEV") go through the full parse in the walk:
  /// a sound v1 log is checked through its head, and a flipped timestamp byte of a record in the middle of it
  /// is refused naming that record's seq.
  @Test func version1RecordsAreCheckedToo() throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("log-data/v1-sandbox-lifecycle.mdb")
    var bytes = try [UInt8](Data(contentsOf: fixture))
    try FileManager.default.createDirectory(atPath: tmp.log, withIntermediateDirectories: true)
    try Data(bytes).write(to: URL(fileURLWithPath: tmp.log + "/data.mdb"))
    func open() throws -> EventLog {
      try openLog(tmp.log) {
        $0.readOnly = true
        $0.checkRecordsAtOpen = true
      }
    }
    let head: UInt64
    do {
      let log = try open()
      defer { log.close() }
      head = log.headSeq
      #expect(head >= 10 && log.recordsCheckedAtOpen == head)
    }
    // v1: magic "OSEV", version 1, then at offset 8 the seq (u64 big-endian) and at 16 the timestamp.
    let magic = Array("OSEV".utf8) + [1]
    let target = head / 2
    var hits = 0
    for i in 0..<(bytes.count - 32) where Array(bytes[i..<(i + 5)]) == magic {
      var seq: UInt64 = 0
      for k in 8..<16 { seq = seq << 8 | UInt64(bytes[i + k]) }
      if seq == target {
        bytes[i + 20] ^= 0x01
        hits += 1
      }
    }
    #expect(hits >= 1)
    try Data(bytes).write(to: URL(fileURLWithPath: tmp.log + "/data.mdb"))
    let e = expectEventLogError(.corrupt) { _ = try open() }
    #expect(e?.seq == target && e?.message.contains("data.mdb is damaged at seq \(target) (page ") == true, "\(String(describing: e))")
  }

  /// A missing record, a record beyond meta's head and a damaged chain checkpoint: each refused naming its seq
  /// with `verify`'s reason.
  @Test func gapsStrayRecordsAndDamagedCheckpointsAreRefused() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    _ = try await Self.makeLog(tmp.log)
    func raw(_ body: (EventLog, Transaction) throws -> Void) throws {
      let log = try openLog(tmp.log)
      defer { log.close() }
      try log.shared.env.withWrite { try body(log, $0) }
    }
    func refusal() -> EventLogError? { expectEventLogError(.corrupt) { _ = try Self.openChecked(tmp.log) } }

    var value20: [UInt8] = []
    try raw { log, txn in
      value20 = try #require(try txn.get(log.shared.env.dbs.events, seqKey(20)))
      try seqKey(20).withUnsafeBytes { kb in
        var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
        try check(mdb_del(txn.ptr, log.shared.env.dbs.events, &k, nil), "mdb_del")
      }
    }
    var e = refusal()
    #expect(e?.seq == 20 && e?.message.contains("record 20 is missing") == true, "\(String(describing: e))")
    try raw { log, txn in try txn.put(log.shared.env.dbs.events, seqKey(20), value20) }
    #expect(try Self.openChecked(tmp.log).recordsCheckedAtOpen == 3000)

    // A well-formed v2 value (checksum recomputed for its key) stored past the head.
    var stray = value20
    stray.removeLast(4)
    stray.appendBE(stray.withUnsafeBytes { CRC32C.checksum(key: 3001, $0) })
    try raw { log, txn in try txn.put(log.shared.env.dbs.events, seqKey(3001), stray) }
    e = refusal()
    #expect(e?.seq == 3001 && e?.message.contains("lies beyond meta head.seq 3000") == true, "\(String(describing: e))")
    try raw { log, txn in
      try seqKey(3001).withUnsafeBytes { kb in
        var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
        try check(mdb_del(txn.ptr, log.shared.env.dbs.events, &k, nil), "mdb_del")
      }
    }

    let interval = UInt64(ChainCheckpoints.interval)
    try raw { log, txn in
      let chain = try #require(log.shared.env.dbs.chain)
      var v = try #require(try txn.get(chain, seqKey(2 * interval)))
      v[3] ^= 0x01
      try txn.put(chain, seqKey(2 * interval), v)
    }
    e = refusal()
    #expect(e?.seq == 2 * interval && e?.message.contains("chain checkpoint at seq \(2 * interval) is damaged") == true, "\(String(describing: e))")
    let log = try openLog(tmp.log)
    defer { log.close() }
    #expect(try log.verify(checksumsOnly: true).firstBad?.seq == 2 * interval)
  }
}
