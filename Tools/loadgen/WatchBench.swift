import EventLog
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Gateway
import OpenShellAPI
import Projections
import Synchronization

extension LoadGen {
  typealias AuditClient = Openshell_Audit_V1_AuditService.Client<HTTP2ClientTransport.Posix>

  /// WatchEvents (issue 12): builds a log of `events` audit records, serves it, and measures over mTLS on
  /// loopback (1) the catch-up rate from `from_seq 1` to the head, `--rounds` times, alternating the
  /// one-event-per-message `WatchEvents`, the batched `WatchEventBatches` with a client that decodes every
  /// event with swift-protobuf (as `openshell audit --follow` does: the headline figure) and the same
  /// with a client that reads only each event's seq (``SeqOnlyDeserializer``); (2) the live lag of
  /// `WatchEventBatches` while records are appended one per commit at `--live-rate` per second for `--duration`
  /// seconds, two ways: receipt time − the record's timestamp (stamped when its commit starts, so it includes
  /// the fsync'd commit) and receipt time − the moment `append` returned (the record durable: the watch's own
  /// delay). The log's sequential reader and its catch-up subscription alone, without gRPC, are measured too,
  /// to show where the time goes.
  func watchBenchmark(events n: Int) async throws {
    let dir = dataDir ?? NSTemporaryDirectory() + "openshell-loadgen-watch-\(getpid())"
    defer { if dataDir == nil { try? FileManager.default.removeItem(atPath: dir) } }
    var t0 = nowNs()
    let kinds = try await Self.buildWatchLog(dir + "/log", count: n, mix: watchMix)
    let built = Double(nowNs() - t0) / 1e9
    AuditFastSummary.decodesMutations.store(watchDecodeMutations, ordering: .relaxed)
    let gw = try await InProcessGateway.start(dir: dir) { $0.checkpointInterval = 0 }
    let log = gw.running.store.log
    // The gateway's start-up may append (an inference bundle for the log's routes) after it answers:
    // measure once the head has stood still for 300 ms, so that the catch-ups end at a fixed head.
    var settled = log.headSeq
    for _ in 0..<20 {
      try await Task.sleep(for: .milliseconds(300))
      if log.headSeq == settled { break }
      settled = log.headSeq
    }
    let head = settled
    print(header(dir: dir, port: gw.port, levels: [1]))
    print(
      String(
        format: "log: %d records (%d \(watchMix.rawValue)-mix records appended in %.1f s), %.1f MiB on disk", head, n, built,
        Double((try? FileManager.default.attributesOfItem(atPath: dir + "/log/data.mdb")[.size] as? Int) ?? 0) / 1_048_576))
    print(Self.distribution(kinds, total: n))
    if watchDecodeMutations { print("fast summaries: the eight audit kinds only (--watch-decode-mutations: mutation kinds decoded)") }
    print()

    // Library level: the sequential reader, and the catch-up subscription.
    t0 = nowNs()
    var reader = log.read(from: 1, through: head, chunkSize: 2048)
    var read = 0
    while try reader.next() != nil { read += 1 }
    let readRate = Double(read) / (Double(nowNs() - t0) / 1e9)
    // The watch's history read: records borrowed from the read buffers, in its pages of 2048 records.
    t0 = nowNs()
    var visited = 0
    var nextSeq: UInt64 = 1
    while nextSeq <= head {
      guard
        let last = try log.visitRecords(
          from: nextSeq, through: head, limit: 2048,
          { _ in
            visited += 1
            return true
          })
      else { break }
      nextSeq = last + 1
    }
    let borrowedRate = Double(visited) / (Double(nowNs() - t0) / 1e9)
    t0 = nowNs()
    for try await item in log.subscribe(from: 1) {
      if case .record(let r) = item, r.seq >= head { break }
    }
    let libRate = Double(head) / (Double(nowNs() - t0) / 1e9)

    let total = Int(Double(liveRate) * duration)
    let rounds = self.rounds
    let liveRate = self.liveRate
    let result = try await withGRPCClients(port: gw.port, pki: dir + "/pki", count: 1, alignFrames: true) { clients in
      let audit = AuditClient(wrapping: clients[0])
      var single: [(rate: Double, cpu: Double)] = []
      var batched: [(rate: Double, cpu: Double)] = []
      var seqOnly: [(rate: Double, cpu: Double)] = []
      var messages = 0
      var inOrder = true
      for _ in 0..<rounds {
        let s = try await Self.catchUp(audit, head: head, batched: false)
        let b = try await Self.catchUp(audit, head: head, batched: true)
        let q = try await Self.catchUpSeqOnly(clients[0], head: head)
        single.append((s.rate, s.cpuPerEvent))
        batched.append((b.rate, b.cpuPerEvent))
        seqOnly.append((q.rate, q.cpuPerEvent))
        messages = b.messages
        inOrder = inOrder && s.inOrder && b.inOrder && q.inOrder
      }
      let cpu0 = Self.processCPUSeconds()
      let t0 = nowNs()
      let live = try await Self.liveLag(audit, log: log, count: total, perSecond: liveRate)
      let liveCPU = (Self.processCPUSeconds() - cpu0) / (Double(nowNs() - t0) / 1e9)
      return (single, batched, seqOnly, messages, inOrder && live.inOrder, (live, liveCPU))
    }
    await gw.stop()
    let (single, batched, seqOnly, messages, inOrder, (live, liveCPU)) = result
    let loadEnd = Self.loadAverage()
    func p(_ sorted: [UInt64], _ q: Double) -> Double {
      sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(q * Double(sorted.count)))]) / 1e6
    }
    func rates(_ r: [(rate: Double, cpu: Double)]) -> String { r.map { String(format: "%.0f", $0.rate) }.joined(separator: " / ") }
    func cpu(_ r: [(rate: Double, cpu: Double)]) -> String { r.map { String(format: "%.2f", $0.cpu * 1e6) }.joined(separator: " / ") }
    print(
      Table.render(
        ["measure", "value"],
        [
          ["catch-up, WatchEventBatches (events/s, each round)", rates(batched)],
          ["  messages for \(head) events", "\(messages)"],
          ["  CPU of the process (server + client) per event, µs", cpu(batched)],
          ["catch-up, WatchEventBatches, seq-only client (events/s, each round)", rates(seqOnly)],
          ["  CPU of the process (server + client) per event, µs", cpu(seqOnly)],
          ["catch-up, WatchEvents one per message (events/s, each round)", rates(single)],
          ["  CPU of the process (server + client) per event, µs", cpu(single)],
          ["catch-up, log sequential reader alone (events/s)", String(format: "%.0f", readRate)],
          ["catch-up, log borrowing reader alone, the watch's history read (events/s)", String(format: "%.0f", borrowedRate)],
          ["catch-up, log subscription alone (events/s)", String(format: "%.0f", libRate)],
          ["live: events appended / received", "\(total) / \(live.fromStamp.count) at \(liveRate)/s, \(live.messages) messages"],
          [
            "live lag from commit start, p50 / p99 / max (ms)",
            String(format: "%.2f / %.2f / %.2f", p(live.fromStamp, 0.5), p(live.fromStamp, 0.99), p(live.fromStamp, 1)),
          ],
          [
            "live lag from durable (append returned), p50 / p99 / max (ms)",
            String(format: "%.2f / %.2f / %.2f", p(live.fromDurable, 0.5), p(live.fromDurable, 0.99), p(live.fromDurable, 1)),
          ],
          ["  CPU of the process during the live phase (% of one core)", String(format: "%.0f", liveCPU * 100)],
          ["every seq once, in order", inOrder ? "yes" : "NO"],
        ]))
    print("load average \(loadEnd) at the end")
  }

  /// The record types of the log, commonest first, with their share, four to a line.
  static func distribution(_ kinds: [String: Int], total: Int) -> String {
    let items = kinds.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
      .map { "\($0.key) " + String(format: "%.1f%%", 100 * Double($0.value) / Double(max(1, total))) }
    return "record types (\(items.count)):\n"
      + stride(from: 0, to: items.count, by: 4).map { "  " + items[$0..<min($0 + 4, items.count)].joined(separator: ", ") }
      .joined(separator: "\n")
  }

  /// One catch-up from seq 1 to `head`: events/s, whether every seq came once in order, the number of
  /// messages, and the CPU time (user + system) the whole process — gateway and client — spent per event in
  /// seconds (stable where the rate is not: a busy machine delays the work but hardly changes its amount).
  static func catchUp(
    _ audit: AuditClient, head: UInt64, batched: Bool
  ) async throws -> (rate: Double, inOrder: Bool, messages: Int, cpuPerEvent: Double) {
    var options = CallOptions.defaults
    options.timeout = nil
    let cpu0 = processCPUSeconds()
    let start = nowNs()
    let (last, inOrder, messages): (UInt64, Bool, Int)
    if batched {
      (last, inOrder, messages) = try await audit.watchEventBatches(.with { $0.fromSeq = 1 }, options: options) { response in
        var last: UInt64 = 0
        var inOrder = true
        var messages = 0
        for try await batch in response.messages {
          messages += 1
          for e in batch.events {
            if e.seq != last + 1 { inOrder = false }
            last = e.seq
          }
          if last >= head { break }
        }
        return (last, inOrder, messages)
      }
    } else {
      (last, inOrder, messages) = try await audit.watchEvents(.with { $0.fromSeq = 1 }, options: options) { response in
        var last: UInt64 = 0
        var inOrder = true
        var messages = 0
        for try await e in response.messages {
          messages += 1
          if e.seq != last + 1 { inOrder = false }
          last = e.seq
          if last >= head { break }
        }
        return (last, inOrder, messages)
      }
    }
    return (Double(head) / (Double(nowNs() - start) / 1e9), inOrder && last == head, messages, (processCPUSeconds() - cpu0) / Double(head))
  }

  /// A catch-up as ``catchUp(_:head:batched:)`` (WatchEventBatches) whose client decodes only each event's
  /// seq (``SeqOnlyDeserializer``) and checks the order: what the gateway delivers when the client's own
  /// decoding is not the bound. The headline client (the CLI's `--follow`) decodes every event fully.
  static func catchUpSeqOnly(
    _ client: GRPCClient<HTTP2ClientTransport.Posix>, head: UInt64
  ) async throws -> (rate: Double, inOrder: Bool, cpuPerEvent: Double) {
    var options = CallOptions.defaults
    options.timeout = nil
    let cpu0 = processCPUSeconds()
    let start = nowNs()
    let (last, inOrder) = try await client.serverStreaming(
      request: ClientRequest(message: Openshell_Audit_V1_WatchEventsRequest.with { $0.fromSeq = 1 }),
      descriptor: Openshell_Audit_V1_AuditService.Method.WatchEventBatches.descriptor,
      serializer: ProtobufSerializer<Openshell_Audit_V1_WatchEventsRequest>(), deserializer: SeqOnlyDeserializer(), options: options
    ) { response in
      var last: UInt64 = 0
      var inOrder = true
      for try await seqs in response.messages {
        for seq in seqs {
          if seq != last + 1 { inOrder = false }
          last = seq
        }
        if last >= head { break }
      }
      return (last, inOrder)
    }
    return (Double(head) / (Double(nowNs() - start) / 1e9), inOrder && last == head, (processCPUSeconds() - cpu0) / Double(head))
  }

  /// User + system CPU seconds of this process so far (getrusage).
  static func processCPUSeconds() -> Double {
    var u = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
    return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
  }

  /// Lags of `count` records appended one per commit at `perSecond` while a WatchEventBatches follows the head.
  static func liveLag(
    _ audit: AuditClient, log: EventLog, count: Int, perSecond: Int
  ) async throws -> (fromStamp: [UInt64], fromDurable: [UInt64], messages: Int, inOrder: Bool) {
    var options = CallOptions.defaults
    options.timeout = nil
    let from = log.headSeq
    let (received, fromStamp, messages, inOrder, writer) = try await audit.watchEventBatches(.with { $0.fromSeq = from }, options: options) {
      response in
      var received = [UInt64](repeating: 0, count: count)
      var fromStamp: [UInt64] = []
      fromStamp.reserveCapacity(count)
      var messages = 0
      var inOrder = true
      var writer: Task<[UInt64], Error>?
      var last = from - 1
      var got = 0
      for try await batch in response.messages {
        let now = nowNs()
        let wall = wallNs()
        messages += 1
        for e in batch.events {
          if e.seq != last + 1 { inOrder = false }
          last = e.seq
          if e.seq == from {
            writer = Task { try await appendLive(log, count: count, perSecond: perSecond) }
          } else if e.requestID.hasPrefix("live"), let i = Int(e.requestID.dropFirst(4)), i < count {
            received[i] = now
            fromStamp.append(wall > e.timestampNs ? wall - e.timestampNs : 0)
            got += 1
          }
        }
        if got >= count { break }
      }
      return (received, fromStamp, messages, inOrder, writer)
    }
    let durable = try await writer?.value ?? []
    let fromDurable = zip(received, durable).map { r, d in r > d ? r - d : 0 }.sorted()
    return (fromStamp.sorted(), fromDurable, messages - 1, inOrder)
  }

  /// Appends the `count` records of `mix` (``WatchMix``) in batches of 1,000 records (one commit each) to a
  /// new log at `path`; returns how many records of each type it wrote.
  static func buildWatchLog(_ path: String, count: Int, mix: WatchMix) async throws -> [String: Int] {
    var o = EventLog.Options()
    o.durability = .noSync
    let log = try EventLog.open(directory: path, options: o)
    defer { log.close() }
    let records = mix.records(count: count, t0: 1_700_000_000_000_000_000)
    var kinds: [String: Int] = [:]
    for r in records { kinds[r.type, default: 0] += 1 }
    var i = 0
    while i < records.count {
      _ = try await log.append(Array(records[i..<min(i + 1000, records.count)]))
      i += 1000
    }
    return kinds
  }

  /// The i-th record of the `audit` mix: the four commonest audit kinds in turn.
  static func sample(_ i: Int) -> GatewayEvent {
    let sb = "sb-\(i % 97)"
    switch i % 4 {
    case 0:
      return GatewayEvent(
        .accessRefused(
          .with {
            $0.identity = "sandbox:\(sb)"; $0.peer = "ipv4:127.0.0.1:\(40000 + i % 20000)"; $0.rpc = "openshell.v1.OpenShell/ListSandboxes"
            $0.code = "PERMISSION_DENIED"; $0.reason = "not available to sandbox identities"; $0.count = UInt64(1 + i % 50)
          }))
    case 1:
      return GatewayEvent(
        .credentialsDisclosed(
          .with {
            $0.rpc = "GetSandboxProviderEnvironment"; $0.recipient = "sandbox:\(sb)"; $0.sandboxID = sb; $0.providers = ["github"]; $0.keys = ["GITHUB_TOKEN"]
          }))
    case 2:
      return GatewayEvent(
        .execStarted(
          .with {
            $0.sandboxID = sb; $0.execID = "e\(i)"; $0.command = ["sh", "-c", "make test -j\(i % 8)"]
          }))
    default:
      return GatewayEvent(
        .execEnded(
          .with {
            $0.sandboxID = sb; $0.execID = "e\(i - 1)"; $0.exitCode = Int32(i % 3); $0.durationMs = UInt64(i % 5000)
          }))
    }
  }

  /// Wall-clock ns since the epoch (the clock record timestamps use).
  static func wallNs() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1e9) }

  /// Appends `count` exec records one at a time at `perSecond` (paced by deadline, not by sleep length);
  /// returns when each append returned (`nowNs`, the record durable).
  static func appendLive(_ log: EventLog, count: Int, perSecond: Int) async throws -> [UInt64] {
    let start = nowNs()
    var done: [UInt64] = []
    done.reserveCapacity(count)
    for i in 0..<count {
      let due = start + UInt64(i) * 1_000_000_000 / UInt64(perSecond)
      let now = nowNs()
      if due > now { try await Task.sleep(for: .nanoseconds(Int(due - now))) }
      _ = try await log.append([sample(2 + 4 * i).newEvent(actor: "operator:CN=bench/sha256:00", requestID: "live\(i)", timestampNs: wallNs())])
      done.append(nowNs())
    }
    return done
  }
}

/// Reads a `WatchEventsResponse` (Protos/audit.proto) for its events' seqs only: field 1 of each
/// `AuditEvent` (field 1 of the response); other fields are skipped. Throws on malformed bytes.
struct SeqOnlyDeserializer: MessageDeserializer {
  struct Malformed: Error {}

  func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> [UInt64] {
    try bytes.withUnsafeBytes { raw in
      var seqs: [UInt64] = []
      var response = WireScanner(raw)
      while !response.atEnd {
        guard let tag = response.tag(), tag == (field: 1, wire: 2), let event = response.lengthDelimited() else { throw Malformed() }
        // seq is the event's first field when set (fields in number order); 0 is omitted.
        var fields = WireScanner(event)
        var seq: UInt64 = 0
        if event.first == 0x08 {
          _ = fields.tag()
          guard let v = fields.varint() else { throw Malformed() }
          seq = v
        }
        seqs.append(seq)
      }
      return seqs
    }
  }
}
