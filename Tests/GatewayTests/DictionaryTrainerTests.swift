import EventLog
import Foundation
import LogTools
import OpenShellAPI
import Testing

@testable import Gateway

/// The gateway trains its log's zstd dictionaries itself (issue 14, bytes per event "with a trained
/// dictionary"): the first once the log holds `dictionaryTrainingAfter` records, the next at twice that.
@Suite struct DictionaryTrainerTests {
  @Test func thresholdsDoubleAndStopBeforeOverflow() {
    #expect(DictionaryTrainer.threshold(firstAfter: 10_000, stored: 0) == 10_000)
    #expect(DictionaryTrainer.threshold(firstAfter: 10_000, stored: 1) == 20_000)
    #expect(DictionaryTrainer.threshold(firstAfter: 10_000, stored: 6) == 640_000)
    #expect(DictionaryTrainer.threshold(firstAfter: 0, stored: 0) == nil)
    #expect(DictionaryTrainer.threshold(firstAfter: UInt64.max / 2, stored: 2) == nil)
  }

  /// A running gateway whose log passes the threshold trains one dictionary, later records use it, and the
  /// log still verifies and replays; below the next threshold no second one is trained.
  @Test func runningGatewayTrainsItsFirstDictionary() async throws {
    let gw = try await TestGateway.start { $0.dictionaryTrainingAfter = 60 }
    func create(_ names: [String]) async throws {
      try await gw.withClient { api in
        for n in names {
          _ = try await api.createProvider(
            .with {
              $0.provider = .with {
                $0.metadata.name = n; $0.type = "generic"; $0.credentials = ["TOKEN": "value-\(n)"]
              }
            })
        }
      }
    }
    try await create((0..<70).map { "before-\($0)" })
    let deadline = ContinuousClock.now + .seconds(30)
    while gw.running.store.log.activeDictionaryID == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
    #expect(gw.running.store.log.activeDictionaryID == 1, "trained within 30 s of passing 60 records")
    try await create((0..<10).map { "after-\($0)" })
    let headBeforeStop = gw.running.store.log.headSeq
    await gw.stop()

    var options = EventLog.Options()
    options.readOnly = true
    let log = try EventLog.open(directory: gw.dataDirectory + "/log", options: options)
    defer { log.close() }
    #expect(try log.dictionaries().count == 1, "the next one is due at 120 records, the log has \(headBeforeStop)")
    let stats = try log.stats()
    #expect((stats.storedPayloadBytesPerDictionary[1] ?? 0) > 0, "records after the training use dictionary 1")
    #expect((stats.storedPayloadBytesPerDictionary[0] ?? 0) > 0, "records before it keep none")
    #expect(try LogVerifier.verify(log).ok)
    let state = try StateLoader.replay(log, through: .head)
    #expect(state.providers.values.contains { $0.name == "after-9" } && state.providers.values.contains { $0.name == "before-0" })
  }

  /// A log already past several thresholds (here 200 records, first threshold 20) gets one dictionary, and
  /// the next only once the head has doubled, not one per poll on the same newest records.
  @Test func longLogGetsOneDictionaryPerDoubling() async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dict-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let log = try EventLog.open(directory: dir)
    defer { log.close() }
    func append(_ n: Int) async throws {
      let events = (0..<n).map { i in
        NewEvent(
          type: "provider.created", aggregate: .init(kind: "provider", id: "p\(i)"), actor: "cli", requestID: "r\(i)",
          payload: Array("{\"name\":\"provider-\(i)\",\"type\":\"generic\"}".utf8))
      }
      _ = try await log.append(events)
    }
    try await append(200)
    let trainer = DictionaryTrainer(log: log, firstAfter: 20)
    #expect(await trainer.trainIfDue() == true)
    #expect(log.activeDictionaryID == 1)
    #expect(await trainer.trainIfDue() == nil, "the count rule wants more (threshold 40 < 200), the doubling rule does not")
    try await append(150)
    #expect(await trainer.trainIfDue() == nil, "350 < 2 × 200")
    try await append(50)
    #expect(await trainer.trainIfDue() == true)
    #expect(try log.dictionaries().count == 2 && log.activeDictionaryID == 2)
    // Every record reads back, whichever dictionary (none, 1, 2) it was written with.
    let records = try log.records(from: 1)
    #expect(records.count == 400)
    #expect(records.last.map { String(decoding: $0.payload, as: UTF8.self) } == "{\"name\":\"provider-49\",\"type\":\"generic\"}")
    #expect(records.first.map { String(decoding: $0.payload, as: UTF8.self) } == "{\"name\":\"provider-0\",\"type\":\"generic\"}")
  }
}
