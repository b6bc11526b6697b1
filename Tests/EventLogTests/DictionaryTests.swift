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
}
