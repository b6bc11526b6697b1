import Foundation
import Testing

@testable import EventLog

@Suite struct BasicTests {
  @Test func crc32cCheckValue() {
    #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
  }

  @Test func roundTrip() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    #expect(log.headSeq == 0)
    #expect(log.headHash == [UInt8](repeating: 0, count: 32))
    let e = NewEvent(
      type: "sandbox.requested", aggregate: AggregateRef(kind: "sandbox", id: "s-1"), actor: "alice",
      requestID: "req-9", payloadVersion: 7, payload: Array("hello, log".utf8), timestampNs: 1_700_000_000_123_456_789)
    let range = try await log.append([e])
    #expect(range == 1...1)
    let r = try #require(try log.record(at: 1))
    #expect(r.seq == 1)
    #expect(r.type == "sandbox.requested")
    #expect(r.aggregate == AggregateRef(kind: "sandbox", id: "s-1"))
    #expect(r.actor == "alice")
    #expect(r.requestID == "req-9")
    #expect(r.payloadVersion == 7)
    #expect(r.timestampNs == 1_700_000_000_123_456_789)
    #expect(r.payload == Array("hello, log".utf8))
    #expect(r.dictionaryID == 0)
    #expect(r.previousHash == [UInt8](repeating: 0, count: 32))
    #expect(r.hash.count == 32)
    #expect(log.headHash == r.hash)
    #expect(log.headSeq == 1)
    #expect(try log.record(at: 2) == nil)
    #expect(try log.aggregateVersion(AggregateRef(kind: "sandbox", id: "s-1")) == 1)

    // Wall-clock stamping when no timestamp is given, and empty/large payloads.
    let before = UInt64(Date().timeIntervalSince1970 * 1e9)
    let big = jsonPayload(1) + jsonPayload(2) + jsonPayload(3)
    try await log.append([event(payload: ""), NewEvent(type: "x", aggregate: .init(kind: "k", id: ""), actor: "", requestID: "", payload: big)])
    let r2 = try #require(try log.record(at: 2))
    let r3 = try #require(try log.record(at: 3))
    #expect(r2.payload.isEmpty)
    #expect(r3.payload == big)
    #expect(r3.storedSize < big.count)  // compressed
    #expect(r2.timestampNs >= before - 1_000_000_000 && r2.timestampNs <= before + 60_000_000_000)
    #expect(r3.previousHash == r2.hash && r2.previousHash == r.hash)
  }

  @Test func gaplessSequencesAndChain() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    var expectedNext: UInt64 = 1
    for batch in 1...20 {
      let events = (0..<(batch % 5 + 1)).map { event(id: "agg-\(batch % 3)", payload: "b\(batch)-\($0)") }
      let range = try await log.append(events)
      #expect(range.lowerBound == expectedNext)
      #expect(range.count == events.count)
      expectedNext = range.upperBound + 1
    }
    let all = try log.records(from: 1)
    #expect(all.map(\.seq) == Array(1..<expectedNext))
    for (a, b) in zip(all, all.dropFirst()) { #expect(b.previousHash == a.hash) }
    #expect(log.headSeq == expectedNext - 1)
    let report = try log.verify()
    #expect(report.isOK)
    #expect(report.records == expectedNext - 1)
  }

  @Test func validationRejectsWholeBatch() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    try await log.append([event()])
    _ = expectEventLogError(.invalidArgument) { try log.appendSync([event(), event(""), event()]) }
    _ = expectEventLogError(.invalidArgument) { try log.appendSync([]) }
    _ = expectEventLogError(.invalidArgument) {
      try log.appendSync([event(String(repeating: "t", count: 256))])
    }
    #expect(log.headSeq == 1)
    #expect(try log.appendSync([event()]) == 2...2)
  }

  @Test func filters() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    for i in 0..<60 {
      try await log.append([
        event(
          i % 2 == 0 ? "a.created" : "a.updated", kind: i % 3 == 0 ? "sandbox" : "provider", id: "id-\(i % 4)",
          payload: "\(i)", ts: 1_000 + UInt64(i) * 10)
      ])
    }
    let all = try log.records(from: 1)
    func check(_ f: EventFilter, sourceLocation: SourceLocation = #_sourceLocation) throws {
      let got = try log.records(from: 1, filter: f)
      let want = all.filter(f.matches)
      #expect(got == want, sourceLocation: sourceLocation)
      #expect(!got.isEmpty && got.count < all.count, sourceLocation: sourceLocation)
    }
    try check(EventFilter(aggregate: AggregateRef(kind: "sandbox", id: "id-0")))
    try check(EventFilter(aggregateKind: "provider"))
    try check(EventFilter(types: ["a.created"]))
    try check(EventFilter(sinceNs: 1_200, untilNs: 1_300))
    try check(EventFilter(aggregateKind: "sandbox", types: ["a.updated"], sinceNs: 1_100))
    // Spot-check the semantics directly.
    #expect(try log.records(from: 1, filter: EventFilter(sinceNs: 1_200, untilNs: 1_300)).map(\.seq) == Array(21...30))
    #expect(
      try log.records(from: 1, filter: EventFilter(aggregate: .init(kind: "sandbox", id: "id-0"))).map(\.seq)
        == [1, 13, 25, 37, 49])
    #expect(try log.records(from: 1, filter: EventFilter(types: ["nope"])).isEmpty)
    #expect(try log.records(from: 1, limit: 5).map(\.seq) == [1, 2, 3, 4, 5])
  }

  @Test func chunkedReadsAcrossBoundaries() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    let events = (0..<1000).map { event(id: "a\($0 % 7)", payload: "p\($0)") }
    #expect(try await log.append(events) == 1...1000)
    for chunk in [1, 7, 512, 999, 1000, 1001] {
      var seen: [UInt64] = []
      try log.forEach(from: 5, through: 995, chunkSize: chunk) { seen.append($0.seq) }
      #expect(seen == Array(5...995), "chunk \(chunk)")
    }
    var filtered: [UInt64] = []
    try log.forEach(from: 1, filter: EventFilter(aggregate: .init(kind: "thing", id: "a3")), chunkSize: 10) {
      filtered.append($0.seq)
      #expect($0.payload == Array("p\($0.seq - 1)".utf8))
    }
    #expect(filtered == Array(stride(from: 4, through: 1000, by: 7)))
    var reader = log.read(from: 990, chunkSize: 3)
    var tail: [UInt64] = []
    while let r = try reader.next() { tail.append(r.seq) }
    #expect(tail == Array(990...1000))
    #expect(try log.records(from: 1001).isEmpty)
    #expect(try log.records(from: 10, through: 9).isEmpty)
  }

  @Test func reopenKeepsHead() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    var log = try openLog(tmp.log)
    try await log.append((0..<25).map { event(payload: "x\($0)") })
    let seq = log.headSeq
    let hash = log.headHash
    log.close()
    _ = expectEventLogError(.closed) { try log.appendSync([event()]) }
    log = try openLog(tmp.log)
    #expect(log.headSeq == seq)
    #expect(log.headHash == hash)
    let next = try await log.append([event(payload: "after")])
    #expect(next == 26...26)
    #expect(try log.record(at: 26)?.previousHash == hash)
    #expect(try log.aggregateVersion(AggregateRef(kind: "thing", id: "a")) == 26)
    #expect(try log.verify().isOK)
    log.close()
  }

  @Test func snapshotsAndCheckpoints() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    #expect(try log.latestSnapshot(name: "state") == nil)
    #expect(try log.checkpoint("state") == nil)
    let s1 = (0..<200).flatMap { jsonPayload($0) }
    try log.saveSnapshot(name: "state", seq: 10, bytes: s1)
    #expect(try log.checkpoint("state") == 10)
    let got = try #require(try log.latestSnapshot(name: "state"))
    #expect(got.seq == 10 && got.bytes == s1)
    try log.saveSnapshot(name: "state", seq: 300, bytes: [1, 2, 3])
    try log.saveSnapshot(name: "state", seq: 20, bytes: [9])  // older seq saved later: latest is by seq
    try log.saveSnapshot(name: "statf", seq: 5, bytes: [])
    try log.saveSnapshot(name: "stat", seq: 999, bytes: [7])
    #expect(try log.latestSnapshot(name: "state")?.seq == 300)
    #expect(try log.latestSnapshot(name: "state")?.bytes == [1, 2, 3])
    #expect(try log.latestSnapshot(name: "statf")?.bytes == [])
    #expect(try log.latestSnapshot(name: "stat")?.seq == 999)
    #expect(try log.latestSnapshot(name: "sta") == nil)
    #expect(try log.latestSnapshot(name: "stateX") == nil)
    #expect(try log.checkpoint("state") == 20)
    try log.setCheckpoint("reactor", seq: 42)
    #expect(try log.checkpoint("reactor") == 42)
    try await log.append([event()], checkpoint: (name: "reactor", seq: 43))
    #expect(try log.checkpoint("reactor") == 43)
    _ = expectEventLogError(.invalidArgument) { try log.setCheckpoint("", seq: 1) }
  }

  @Test func onlyTheNewestSnapshotsOfANameAreKept() throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    for seq in UInt64(1)...6 { try log.saveSnapshot(name: "many", seq: seq, bytes: [UInt8(seq)]) }
    try log.saveSnapshot(name: "other", seq: 1, bytes: [0])
    #expect(EventLog.snapshotsKept == 3)
    #expect(try log.snapshotSeqs(name: "many") == [6, 5, 4])
    #expect(try log.snapshot(name: "many", seq: 3) == nil)
    #expect(try log.snapshot(name: "many", seq: 4)?.bytes == [4])
    #expect(try log.snapshotSeqs(name: "other") == [1], "another name's snapshots are left alone")
    try log.saveSnapshot(name: "many", seq: 7, bytes: [7], keep: 1)
    #expect(try log.snapshotSeqs(name: "many") == [7])
    _ = expectEventLogError(.invalidArgument) { try log.saveSnapshot(name: "many", seq: 8, bytes: [], keep: 0) }
  }

  @Test func writerLockAndReadOnly() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    _ = expectEventLogError(.notFound) { _ = try openLog(tmp.log) { $0.readOnly = true } }
    let log = try openLog(tmp.log)
    try await log.append([event()])
    let e = expectEventLogError(.locked) { _ = try openLog(tmp.log) }
    #expect(e?.message.contains("pid \(getpid())") == true, "\(String(describing: e))")
    log.close()
    // After close the lock is free; a read-only open does not take it.
    let ro = try openLog(tmp.log) { $0.readOnly = true }
    #expect(ro.isReadOnly && ro.headSeq == 1)
    #expect(try ro.record(at: 1)?.payload == Array("payload".utf8))
    _ = expectEventLogError(.readOnly) { try ro.appendSync([event()]) }
    _ = expectEventLogError(.readOnly) { try ro.setCheckpoint("x", seq: 1) }
    #expect(try ro.verify().isOK)
    ro.close()
  }
}
