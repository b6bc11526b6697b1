import Foundation
import Testing

@testable import EventLog

@Suite struct GrowthTests {
  /// A 256 KiB map grows transparently (MDB_MAP_FULL → mdb_env_set_mapsize, retry) while several MB are
  /// appended, including one batch larger than the whole initial map.
  @Test func mapGrowsTransparently() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log) { $0.initialMapSize = 256 << 10 }
    defer { log.close() }
    #expect(try log.stats().mapSize == 256 << 10)
    for b in 0..<120 {
      try await log.append(
        (0..<10).map { i in
          var e = event(payload: "")
          e.payload = noise(4096, seed: UInt64(b * 10 + i + 1))
          return e
        })
    }
    var huge = event(payload: "")
    huge.payload = noise(3 << 20, seed: 99)
    #expect(try await log.append([huge]) == 1201...1201)
    let s = try log.stats()
    print("map growth: \(s.mapSize) bytes map after \(log.writerStats.mapGrowths) growths, \(s.fileBytes) bytes file")
    #expect(s.mapSize >= 8 << 20)
    #expect(log.writerStats.mapGrowths >= 4)
    #expect(s.records == 1201)
    #expect(try log.record(at: 777)?.payload == noise(4096, seed: 777))
    #expect(try log.record(at: 1201)?.payload == huge.payload)
    #expect(try log.verify().isOK)
  }

  /// At maxMapSize the append fails with `.mapFull`, nothing is written, and the log stays usable.
  @Test func mapFullAtMaximum() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log) {
      $0.initialMapSize = 256 << 10
      $0.maxMapSize = 512 << 10
    }
    defer { log.close() }
    try await log.append([event()])
    var big = event(payload: "")
    big.payload = noise(1 << 20, seed: 5)
    _ = expectEventLogError(.mapFull) { try log.appendSync([big]) }
    #expect(log.headSeq == 1)
    #expect(try log.appendSync([event()]) == 2...2)
    #expect(try log.verify().isOK)
  }

  /// A full file system (a 2 MiB tmpfs) yields `.diskFull` with no partial batch; the log reopens and
  /// verifies. Skipped (with a printed reason) when tmpfs cannot be mounted.
  @Test func diskFullOnSmallTmpfs() async throws {
    let tmp = TempDir("diskfull")
    defer { tmp.remove() }
    let mnt = tmp.path + "/mnt"
    try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
    let m = runCommand("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt])
    guard m.status == 0 else {
      print("SKIP diskFullOnSmallTmpfs: cannot mount tmpfs (\(m.status)): \(m.output)")
      return
    }
    defer {
      let u = runCommand("/usr/bin/umount", [mnt])
      if u.status != 0 { runCommand("/usr/bin/umount", ["-l", mnt]) }
    }
    let dir = mnt + "/log"
    var lastAcked: UInt64 = 0
    var payloads: [UInt64: [UInt8]] = [:]
    do {
      let log = try openLog(dir)
      var failure: EventLogError?
      for b in 0..<10_000 {
        let batch = (0..<3).map { i -> NewEvent in
          var e = event(id: "b\(b)")
          e.payload = noise(3000, seed: UInt64(b * 3 + i + 1))
          return e
        }
        do {
          let r = try await log.append(batch)
          for (seq, e) in zip(r, batch) { payloads[seq] = e.payload }
          lastAcked = r.upperBound
        } catch let e as EventLogError {
          failure = e
          break
        }
      }
      #expect(failure?.code == .diskFull, "\(String(describing: failure))")
      print("disk full after \(lastAcked) events: \(String(describing: failure))")
      #expect(lastAcked > 0 && lastAcked % 3 == 0)
      #expect(log.headSeq == lastAcked)
      #expect(try log.record(at: lastAcked + 1) == nil)
      // Still a clean error, still readable.
      var more = event()
      more.payload = noise(20_000, seed: 1234)
      _ = expectEventLogError(.diskFull) { try log.appendSync([more]) }
      #expect(try log.record(at: lastAcked)?.payload == payloads[lastAcked])
      log.close()
    }
    let log = try openLog(dir)
    defer { log.close() }
    #expect(log.headSeq == lastAcked)
    #expect(try log.record(at: lastAcked + 1) == nil)
    let report = try log.verify()
    #expect(report.isOK, "\(String(describing: report.firstBad))")
    #expect(report.records == lastAcked)
    for (seq, p) in payloads { #expect(try log.record(at: seq)?.payload == p) }
  }
}
