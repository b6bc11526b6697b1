import Foundation
import Testing

@testable import EventLog

@Suite struct DictionaryTests {
  @Test func trainedDictionaryShrinksRecordsAndOldRecordsStayReadable() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    var log = try openLog(tmp.log)
    #expect(log.activeDictionaryID == 0)
    _ = expectEventLogError(.invalidArgument) { try log.trainDictionary() }  // nothing to train on
    let n = 400
    for i in stride(from: 0, to: n, by: 50) {
      try await log.append((i..<(i + 50)).map { event(id: "s\($0 % 9)", payload: String(decoding: jsonPayload($0), as: UTF8.self)) })
    }
    let id1 = try log.trainDictionary(sampleLimit: 400, dictionarySize: 8 << 10)
    #expect(id1 == 1)
    #expect(log.activeDictionaryID == 1)
    for i in stride(from: n, to: 2 * n, by: 50) {
      try await log.append((i..<(i + 50)).map { event(id: "s\($0 % 9)", payload: String(decoding: jsonPayload($0), as: UTF8.self)) })
    }
    let s = try log.stats()
    let without = Double(s.storedPayloadBytesPerDictionary[0] ?? 0) / Double(s.recordsPerDictionary[0] ?? 1)
    let with = Double(s.storedPayloadBytesPerDictionary[1] ?? 0) / Double(s.recordsPerDictionary[1] ?? 1)
    print("dictionary: \(without) stored payload bytes/record without, \(with) with (uncompressed \(jsonPayload(7).count))")
    #expect(s.recordsPerDictionary[0] == UInt64(n))
    #expect(s.recordsPerDictionary[1] == UInt64(n))
    #expect(with < without * 0.8)

    // A second dictionary; records of both earlier generations still decode.
    let id2 = try log.trainDictionary(sampleLimit: 200)
    #expect(id2 == 2)
    try await log.append([event(payload: String(decoding: jsonPayload(12345), as: UTF8.self))])
    log.close()
    log = try openLog(tmp.log)
    defer { log.close() }
    #expect(log.activeDictionaryID == 2)
    #expect(try log.dictionaries().map(\.id) == [1, 2])
    let all = try log.records(from: 1)
    #expect(all.count == 2 * n + 1)
    for r in all.prefix(2 * n) { #expect(r.payload == jsonPayload(Int(r.seq) - 1)) }
    #expect(all[0].dictionaryID == 0)
    #expect(all[n].dictionaryID == 1)
    #expect(all[2 * n].dictionaryID == 2)
    #expect(all[2 * n].payload == jsonPayload(12345))
    #expect(try log.verify().isOK)
  }

  /// A small call is encoded by its caller (`encodeOnCaller`) with the dictionary active then; if another one is
  /// activated before the writer stores it, its records keep the id they were compressed with, decode, chain, and
  /// reach subscribers with that id.
  @Test func callerEncodedRecordsKeepTheDictionaryTheyWereCompressedWith() async throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    let log = try openLog(tmp.log)
    defer { log.close() }
    try await log.append((0..<200).map { event(id: "s\($0 % 9)", payload: String(decoding: jsonPayload($0), as: UTF8.self)) })
    let id1 = try log.trainDictionary(sampleLimit: 200, dictionarySize: 4 << 10)
    let e = event(payload: String(decoding: jsonPayload(777), as: UTF8.self), ts: 1_000)
    let early = try #require(try log.encodeOnCaller([e]))
    #expect(early.dictionaryID == id1)
    let id2 = try log.trainDictionary(sampleLimit: 200, dictionarySize: 4 << 10)
    #expect(id2 == id1 + 1)
    // A live subscriber (registered and caught up before 201 exists): its records are made by the writer.
    let live = Task { () throws -> [EventRecord] in
      var it = log.subscribe(from: 201).makeAsyncIterator()
      var out: [EventRecord] = []
      while out.count < 2, let next = try await it.next() {
        if case .record(let r) = next { out.append(r) }
      }
      return out
    }
    while log.liveSubscriberCount == 0 { try await Task.sleep(for: .milliseconds(5)) }
    try await Task.sleep(for: .milliseconds(100))
    // Handed to the writer as `append` would, after the second dictionary became active.
    let range: ClosedRange<UInt64> = try await withCheckedThrowingContinuation { c in
      log.writer!.submit(
        .append(
          AppendRequest(
            events: [e], expecting: [:], checkpoint: nil, preEncoded: early,
            completion: { c.resume(with: $0.mapError { $0 as Error }) })))
    }
    #expect(range == 201...201)
    try await log.append([event(payload: String(decoding: jsonPayload(778), as: UTF8.self))])
    let r201 = try #require(try log.record(at: 201))
    #expect(r201.dictionaryID == id1)
    #expect(r201.payload == jsonPayload(777))
    let r202 = try #require(try log.record(at: 202))
    #expect(r202.dictionaryID == id2)
    let delivered = try await live.value
    #expect(delivered.map(\.seq) == [201, 202])
    #expect(delivered.map(\.dictionaryID) == [id1, id2])
    #expect(delivered.map(\.payload) == [jsonPayload(777), jsonPayload(778)])
    #expect(try log.verify().isOK)
    // An event the log refuses is refused by the caller's encoding, before it reaches the writer.
    var bad = event(payload: "x")
    bad.type = ""
    do {
      try await log.append([bad])
      Issue.record("an event without a type was stored")
    } catch let err as EventLogError {
      #expect(err.code == .invalidArgument)
    }
    #expect(log.headSeq == 202)
  }
}
