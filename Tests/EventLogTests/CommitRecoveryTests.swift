import Foundation
import Testing

@testable import EventLog

#if canImport(Glibc)
  import Glibc
#endif

/// A `.sync` commit flushes its data pages once and leaves its meta page for the next flush (issue 14). These
/// tests make the file look as a system crash right after the last `append` returned would leave it — the meta
/// page slot that commit wrote holds its old bytes again — and check that the next writable open puts the
/// acknowledged commit back whole, or (when its pages are damaged: a commit torn before it returned) not at all.
@Suite struct CommitRecoveryTests {
  /// The meta page slot the next commit will write (the one with the older transaction id) and its bytes.
  static func olderMetaSlot(_ dir: String) throws -> (slot: Int, bytes: [UInt8]) {
    let data = try #require(FileManager.default.contents(atPath: dir + "/data.mdb"))
    let b = [UInt8](data)
    let ps = Int(UInt32(b[40]) | UInt32(b[41]) << 8 | UInt32(b[42]) << 16 | UInt32(b[43]) << 24)
    func txnid(_ slot: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[slot * ps + 144 + $1]) << (8 * UInt64($1)) } }
    let slot = txnid(0) < txnid(1) ? 0 : 1
    return (slot, Array(b[(slot * ps)..<((slot + 1) * ps)]))
  }

  /// Writes `bytes` over page `page` of `dir`/data.mdb (page size = bytes.count) and flushes.
  static func overwrite(_ dir: String, page: Int, with bytes: [UInt8]) throws {
    let fd = open(dir + "/data.mdb", O_WRONLY)
    #expect(fd >= 0)
    defer { close(fd) }
    let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, bytes.count, off_t(page * bytes.count)) }
    #expect(n == bytes.count)
    fsync(fd)
  }

  /// Builds a log whose last commit (3 events, one over a page long, and a consumer checkpoint) is acknowledged
  /// and then "loses" its meta page. Returns the head before and after that commit, its hash and the seqs.
  static func logWithLostLastCommit(
    _ dir: String, bigPayloads: Int = 9000, _ configure: (inout EventLog.Options) -> Void = { _ in }
  ) throws -> (before: UInt64, after: UInt64, hash: [UInt8], slotPage: Int) {
    let log = try openLog(dir, configure)
    for i in 0..<20 { try log.appendSync([event(id: "s\(i % 3)", payload: "early \(i)")]) }
    let before = log.headSeq
    let (slot, old) = try olderMetaSlot(dir)
    let range = try log.appendSync(
      [
        event("late.one", id: "s1", payload: "late 1"),
        event("late.big", id: "s9", payload: String(decoding: noise(bigPayloads, seed: 7).map { 0x41 + $0 % 26 }, as: UTF8.self)),
        event("late.three", id: "s1", payload: "late 3"),
      ], checkpoint: (name: "feed", seq: before + 3))
    #expect(range == (before + 1)...(before + 3))
    let hash = log.headHash
    log.close()
    // The crash: the commit's meta page never reached the disk, and nobody closed the log.
    try overwrite(dir, page: slot, with: old)
    unlink(dir + "/" + CommitRecovery.cleanCloseFile)
    return (before, before + 3, hash, slot)
  }

  @Test func acknowledgedLastCommitIsPutBackAfterItsMetaPageWasLost() throws {
    let tmp = TempDir("commit-recovery")
    defer { tmp.remove() }
    let (before, after, hash, _) = try Self.logWithLostLastCommit(tmp.log)
    // The loss is real: LMDB alone (a read-only open does not recover) ends before the commit.
    let ro = try openLog(tmp.log) { $0.readOnly = true }
    #expect(ro.headSeq == before)
    ro.close()

    let log = try openLog(tmp.log)
    let report = try #require(log.commitRecovery)
    #expect(!report.cleanClose)
    #expect(report.pagesScanned > 0)
    #expect(report.recovered == (before + 1)...after)
    #expect(report.rejected == 0)
    #expect(log.headSeq == after)
    #expect(log.headHash == hash)
    #expect(try log.checkpoint("feed") == after)
    #expect(try log.aggregateVersion(AggregateRef(kind: "thing", id: "s1")) == 9)  // 7 early + 2 late
    #expect(try log.aggregateVersion(AggregateRef(kind: "thing", id: "s9")) == 1)
    let late = try log.records(from: before + 1)
    #expect(late.map(\.type) == ["late.one", "late.big", "late.three"])
    #expect(late[1].payload.count == 9000)
    #expect(late[1].payload == noise(9000, seed: 7).map { 0x41 + $0 % 26 })
    #expect(try log.verify().isOK)
    // The log goes on from there, and a clean close needs no scan next time.
    #expect(try log.appendSync([event(id: "s1", payload: "after")]) == (after + 1)...(after + 1))
    log.close()
    let again = try openLog(tmp.log)
    #expect(again.commitRecovery?.cleanClose == true)
    #expect(again.commitRecovery?.pagesScanned == 0)
    #expect(again.headSeq == after + 1)
    #expect(try again.verify().isOK)
    #expect(!FileManager.default.fileExists(atPath: tmp.log + "/" + CommitRecovery.cleanCloseFile))
    again.close()
  }

  @Test func aCommitWithADamagedRecordIsNotHalfRestored() throws {
    let tmp = TempDir("commit-recovery")
    defer { tmp.remove() }
    let (before, _, _, _) = try Self.logWithLostLastCommit(tmp.log)
    // Damage where the third record lies (a torn write): the first two alone must not come back.
    let scan = try CommitRecoveryScan.scan(path: tmp.log + "/data.mdb", after: before)
    #expect(scan.markers.count == 1)
    let pages = try #require(scan.candidatePages[before + 3])
    let ps = try Self.olderMetaSlot(tmp.log).bytes.count
    for p in Set(pages) { try Self.overwrite(tmp.log, page: Int(p), with: [UInt8](repeating: 0xA5, count: ps)) }

    let log = try openLog(tmp.log)
    #expect(log.commitRecovery?.recovered == nil)
    #expect(log.commitRecovery?.rejected == 1)
    #expect(log.headSeq == before)
    #expect(try log.checkpoint("feed") == nil)
    #expect(try log.verify().isOK)
    #expect(try log.appendSync([event(id: "s1", payload: "next")]) == (before + 1)...(before + 1))
    log.close()
  }

  @Test func withoutItsMarkerNothingIsRestored() throws {
    let tmp = TempDir("commit-recovery")
    defer { tmp.remove() }
    let (before, _, _, _) = try Self.logWithLostLastCommit(tmp.log)
    let scan = try CommitRecoveryScan.scan(path: tmp.log + "/data.mdb", after: before)
    let ps = try Self.olderMetaSlot(tmp.log).bytes.count
    for p in scan.markerPages { try Self.overwrite(tmp.log, page: Int(p), with: [UInt8](repeating: 0, count: ps)) }

    let log = try openLog(tmp.log)
    #expect(log.commitRecovery?.recovered == nil)
    #expect(log.commitRecovery?.rejected == 0)
    #expect(log.headSeq == before)
    #expect(try log.verify().isOK)
    log.close()
  }

  @Test func aFailedCommitIsNeverPutBack() throws {
    let tmp = TempDir("commit-recovery")
    defer { tmp.remove() }
    let (before, _, _, _) = try Self.logWithLostLastCommit(tmp.log)
    // As the writer records a commit whose mdb_txn_commit failed: its pages are there, its callers got an error.
    let scan = try CommitRecoveryScan.scan(path: tmp.log + "/data.mdb", after: before)
    let marker = try #require(scan.markers.first)
    #expect(CommitRecovery.recordAborted(marker, directory: tmp.log))
    #expect(CommitRecovery.loadAborted(directory: tmp.log).map(\.firstSeq) == [before + 1])
    let log = try openLog(tmp.log)
    #expect(log.commitRecovery?.recovered == nil)
    #expect(log.commitRecovery?.rejected == 1)
    #expect(log.headSeq == before)
    // The next commit takes those seqs; once the head has passed them, the record of the failure goes.
    try log.appendSync([event(id: "s1", payload: "instead")])
    log.close()
    let again = try openLog(tmp.log)
    #expect(again.headSeq == before + 1)
    #expect(CommitRecovery.loadAborted(directory: tmp.log).isEmpty)
    #expect(try again.verify().isOK)
    again.close()
  }

  @Test func recoveryGrowsTheMapAndRunsWhateverTheDurabilityOfTheOpen() throws {
    let tmp = TempDir("commit-recovery")
    defer { tmp.remove() }
    // A log larger than the map it is opened with, whose lost commit needs pages past the end of the file.
    let small: (inout EventLog.Options) -> Void = { $0.initialMapSize = 64 << 10 }
    let seed = try openLog(tmp.log, small)
    for i in 0..<40 { try seed.appendSync([event(id: "b\(i)", payload: String(repeating: "x", count: 6000))]) }
    seed.close()
    let (before, after, hash, _) = try Self.logWithLostLastCommit(tmp.log, bigPayloads: 40000, small)
    let log = try openLog(tmp.log) {
      $0.initialMapSize = 64 << 10
      $0.durability = .noMetaSync
    }
    #expect(log.commitRecovery?.recovered == (before + 1)...after)
    #expect(log.headHash == hash)
    #expect(try log.verify().isOK)
    log.close()
  }

  /// The scan reads pages nobody vouches for: leaf-looking pages full of random nodes (keys, sizes, flags,
  /// overflow page numbers of any 8 bytes) must never trap it.
  @Test func theScanSurvivesHostilePages() throws {
    let tmp = TempDir("commit-recovery")
    defer { tmp.remove() }
    let ps = 4096
    var file = [UInt8]()
    file.append(contentsOf: [UInt8](repeating: 0, count: 2 * ps))
    file[40] = 0x00
    file[41] = 0x10  // meta page 0: page size 4096 (free-list md_pad)
    for p in 2..<258 {
      var page = noise(ps, seed: UInt64(p) &* 7919)
      for i in 0..<8 { page[i] = UInt8(truncatingIfNeeded: p >> (8 * i)) }
      page[10] = 0x02
      page[11] = 0  // P_LEAF
      let nodes = 1 + p % 40
      let lower = 16 + 2 * nodes
      page[12] = UInt8(lower & 0xFF)
      page[13] = UInt8(lower >> 8)
      let upper = lower + p % 64
      page[14] = UInt8(upper & 0xFF)
      page[15] = UInt8(upper >> 8)
      for k in 0..<nodes {
        let off = upper + (k * 97 + p) % (ps - upper)
        page[16 + 2 * k] = UInt8(off & 0xFF)
        page[17 + 2 * k] = UInt8(off >> 8)
        if off + 8 <= ps {
          page[off + 4] = UInt8(k % 2)  // F_BIGDATA on every other node
          page[off + 5] = 0
          page[off + 6] = k % 3 == 0 ? 8 : UInt8(truncatingIfNeeded: k)
          page[off + 7] = 0
        }
      }
      file.append(contentsOf: page)
    }
    try Data(file).write(to: URL(fileURLWithPath: tmp.path + "/data.mdb"))
    let result = try CommitRecoveryScan.scan(path: tmp.path + "/data.mdb", after: 0)
    #expect(result.pages == 256)
    #expect(result.markers.isEmpty)
  }

  /// A failed commit's records may lie beside its replacement's under the same seqs; both decode (a record does
  /// not store its predecessor's hash). The marker's CRC list picks the acknowledged ones even when the others
  /// come first for 40 seqs (a search over the chain alone would need up to 2^40 tries).
  @Test func theMarkersCRCsPickTheRightValueWhereTwoLieUnderOneSeq() throws {
    let tmp = TempDir("commit-recovery")
    defer { tmp.remove() }
    func build(_ dir: String, tag: String) throws -> UInt64 {
      let log = try openLog(dir)
      for i in 0..<20 { try log.appendSync([event(id: "s\(i % 3)", payload: "early \(i)")]) }
      let before = log.headSeq
      let (slot, old) = try Self.olderMetaSlot(dir)
      try log.appendSync((0..<40).map { event(id: "m\($0)", payload: "\(tag) \($0)") })
      log.close()
      try Self.overwrite(dir, page: slot, with: old)
      unlink(dir + "/" + CommitRecovery.cleanCloseFile)
      return before
    }
    let before = try build(tmp.path + "/a", tag: "acknowledged")
    #expect(try build(tmp.path + "/b", tag: "failed") == before)
    var scan = try CommitRecoveryScan.scan(path: tmp.path + "/a/data.mdb", after: before)
    let other = try CommitRecoveryScan.scan(path: tmp.path + "/b/data.mdb", after: before)
    #expect(other.candidates.count >= 40)
    for (seq, values) in other.candidates { scan.candidates[seq] = values + (scan.candidates[seq] ?? []) }
    let marker = try #require(scan.markers.first)
    let ro = try openLog(tmp.path + "/a") { $0.readOnly = true }
    defer { ro.close() }
    let head = PublishedState(headSeq: before, headHash: ro.headHash, activeDictionaryID: 0)
    let found = try #require(try CommitRecovery.verify(marker, scan: scan, head: head, shared: ro.shared))
    #expect(found.map { String(decoding: $0.record.payload, as: UTF8.self) } == (0..<40).map { "acknowledged \($0)" })
    #expect(found.last?.record.hash == marker.lastHash)
  }

  /// A damaged head seq (all ones) must not make the recovery's arithmetic trap at the next open.
  @Test func aDamagedHeadSeqDoesNotTrapTheOpen() throws {
    let tmp = TempDir("commit-recovery")
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    try log.appendSync([event(payload: "one")])
    try log.performWrite { txn, _ in try txn.put(log.shared.env.dbs.meta, MetaKey.headSeq, [UInt8](repeating: 0xFF, count: 8)) }
    log.close()
    unlink(tmp.log + "/" + CommitRecovery.cleanCloseFile)
    let again = try openLog(tmp.log)
    #expect(again.headSeq == .max)
    #expect(again.commitRecovery?.recovered == nil)
    again.close()
  }

  @Test func markerRoundTripAndDamage() throws {
    let m = CommitMarker(
      committedAtNs: 1_800_000_000_000_000_000, firstSeq: 5, lastSeq: 9, lastHash: [UInt8](repeating: 3, count: 32), checkpoints: [("a", 7), ("bb", 9)],
      recordCRCs: [1, 2, 3, 4, 5])
    var v = m.encoded
    #expect(v.withUnsafeBytes { CommitMarker(decoding: $0) } == m)
    v[20] ^= 1
    #expect(v.withUnsafeBytes { CommitMarker(decoding: $0) } == nil)
    #expect([UInt8]().withUnsafeBytes { CommitMarker(decoding: $0) } == nil)
  }
}
