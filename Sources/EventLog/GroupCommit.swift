import CLMDB
import Logging

/// Keys of the `meta` database.
enum MetaKey {
  static let format = Array("format".utf8)  // u32: RecordFormat.formatVersion of the log
  static let headSeq = Array("head.seq".utf8)  // u64
  static let headHash = Array("head.hash".utf8)  // 32 bytes
  static let activeDictionary = Array("dict.active".utf8)  // u32
}

/// Key of an aggregate in the `aggregates` database: u16 BE length of kind, kind, id (UTF-8).
func aggregateKey(_ a: AggregateRef) -> [UInt8] {
  let k = Array(a.kind.utf8)
  var out = [UInt8]()
  out.appendBE(UInt16(truncatingIfNeeded: k.count))
  out += k
  out += Array(a.id.utf8)
  return out
}

/// Reads an aggregate's version (event count) inside `txn`; 0 if it has none.
func readAggregateVersion(_ txn: Transaction, _ dbs: Databases, _ a: AggregateRef) throws -> UInt64 {
  guard let v = try txn.get(dbs.aggregates, aggregateKey(a)) else { return 0 }
  guard let n = decodeBE64(v) else {
    throw EventLogError.corrupt(nil, "aggregate version of \(a) is not 8 bytes")
  }
  return n
}

/// Checks a checkpoint name: non-empty, at most 500 bytes (LMDB's default maximum key size is 511 bytes).
func validateName(_ name: String, what: String) throws {
  let n = name.utf8.count
  guard n > 0 && n <= 500 else { throw EventLogError.invalid("\(what) must be 1-500 bytes, got \(n)") }
  guard !name.utf8.contains(0) else { throw EventLogError.invalid("\(what) must not contain NUL") }
}

extension Writer {
  /// A validated request with its records already encoded (reused across map-growth retries).
  private struct Prepared {
    var request: AppendRequest
    /// Per event: the v3 value without its CRC (``RecordFormat/unsealedV3``) and whether the body is raw.
    var values: [EncodedRecord]
  }

  /// Writes one group of append calls in one write transaction (group commit).
  ///
  /// Each call's expectations are checked in order against the versions in the `aggregates` database plus
  /// the events of earlier calls in the same transaction; a failing call gets `.conflict` and writes nothing,
  /// the others proceed. After `mdb_txn_commit` returns, the head is published, subscribers are fed and
  /// every caller is resumed. If the commit fails (e.g. `ENOSPC`), every call in the group fails and nothing
  /// of the group is stored (the transaction is aborted as a whole).
  func runAppends(_ batch: [AppendRequest]) {
    let started = monotonicNs()
    var results = [Result<ClosedRange<UInt64>, EventLogError>?](repeating: nil, count: batch.count)
    var prepared: [(Int, Prepared)] = []
    let dictID = activeDictionary?.id ?? 0
    for (i, r) in batch.enumerated() {
      do {
        guard !r.events.isEmpty else { throw EventLogError.invalid("append needs at least one event") }
        for e in r.events { try RecordFormat.validate(e) }
        if let cp = r.checkpoint { try validateName(cp.name, what: "checkpoint name") }
        let values = try encodeRecords(r.events, dictionaryID: dictID)
        prepared.append((i, Prepared(request: r, values: values)))
      } catch let e as EventLogError {
        results[i] = .failure(e)
      } catch {
        results[i] = .failure(EventLogError(code: .storage, message: "\(error)"))
      }
    }

    struct Outcome {
      var head: PublishedState
      var lastCheckpoint: UInt64
      /// Chain hash of every record written, in seq order (the first follows `start.headHash`).
      var hashes: [[UInt8]] = []
      /// Indices into `prepared` of the calls written, in seq order.
      var written: [Int] = []
      var ranges: [Int: Result<ClosedRange<UInt64>, EventLogError>] = [:]
    }
    let encodedAt = monotonicNs()
    var built: UInt64 = 0  // when the transaction's puts were done (mdb_txn_commit follows)
    var committed: UInt64 = 0
    var stored = false  // the commit stored events: its phases count in the writer's timings
    let dbs = shared.env.dbs
    let start = head
    let startCheckpoint = lastCheckpoint
    let markFormat = !formatMarked
    let interval = ChainCheckpoints.interval
    // A bulk load has its own crash protocol (BulkLoad.swift): its commits carry no marker.
    let recoverable = shared.options.durability == .sync && !shared.bulkLoading.load(ordering: .relaxed)
    var attempted: CommitMarker?  // the marker this commit stores, if any (recorded as aborted if the commit fails)
    do {
      let outcome: Outcome = try withMapGrowth {
        try shared.env.withWrite { txn -> Outcome in
          var out = Outcome(head: start, lastCheckpoint: startCheckpoint)
          var hasher = ChainHasher()
          guard let chainDB = dbs.chain else { throw EventLogError(code: .storage, message: "no chain database") }
          func checkpoint(_ seq: UInt64, _ hash: [UInt8]) throws {
            try txn.put(chainDB, seqKey(seq), ChainCheckpoints.value(seq: seq, hash: hash))
            out.lastCheckpoint = seq
          }
          // A log last written by an older build has no checkpoint near its head: anchor the chain there, so
          // no read of a v2 or v3 record walks back further than one interval.
          if start.headSeq > 0, start.headSeq - startCheckpoint >= interval, !prepared.isEmpty {
            try checkpoint(start.headSeq, start.headHash)
          }
          // Aggregate versions read or bumped in this transaction; `touched` ones are written back. One hash
          // lookup per event for an aggregate already seen (issue 14: bulk load).
          var versions = AggregateVersions()
          var crcs: [UInt32] = []  // each stored record's CRC-32C, for the CommitMarker
          func version(_ a: AggregateRef) throws -> UInt64 {
            try versions.version(a) { try readAggregateVersion(txn, dbs, a) }
          }
          requests: for pi in prepared.indices {
            let i = prepared[pi].0
            let request = prepared[pi].1.request
            for (agg, exp) in request.expecting {
              let actual = try version(agg)
              if !exp.accepts(actual) {
                out.ranges[i] = .failure(
                  EventLogError(
                    code: .conflict,
                    message: "aggregate \(agg) is at version \(actual), expected \(exp)",
                    aggregate: agg, expected: exp, actual: actual))
                continue requests
              }
            }
            let first = out.head.headSeq + 1
            // By index, not `zip`: no copy (seven retains and releases) of every event and value (issue 14).
            let events = request.events
            let values = prepared[pi].1.values
            out.hashes.reserveCapacity(out.hashes.count + events.count)
            for k in events.indices {
              let seq = out.head.headSeq + 1
              let hash = hasher.hash(
                previousHash: out.head.headHash, seq: seq, timestampNs: events[k].timestampNs ?? 0, event: events[k])
              let size = values[k].unsealed.count + RecordFormat.checksumSize
              try values[k].unsealed.withUnsafeBytes { u in
                try txn.putReserved(dbs.events, seq: seq, count: size, flags: MDB_APPEND) {
                  RecordFormat.seal(u, seq: seq, into: $0)
                  if recoverable { crcs.append(UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: size - 4, as: UInt32.self))) }
                }
              }
              if seq % interval == 0 { try checkpoint(seq, hash) }
              try versions.bump(events[k].aggregate) { try readAggregateVersion(txn, dbs, events[k].aggregate) }
              out.hashes.append(hash)
              out.head.headSeq = seq
              out.head.headHash = hash
            }
            if let cp = request.checkpoint {
              try txn.put(dbs.checkpoints, Array(cp.name.utf8), seqKey(cp.seq))
            }
            out.written.append(pi)
            out.ranges[i] = .success(first...out.head.headSeq)
          }
          if !out.hashes.isEmpty {
            for (agg, v) in versions.touched { try txn.put(dbs.aggregates, aggregateKey(agg), seqKey(v)) }
            try txn.put(dbs.meta, MetaKey.headSeq, seqKey(out.head.headSeq))
            try txn.put(dbs.meta, MetaKey.headHash, out.head.headHash)
            // What CommitRecovery needs if a crash keeps this commit's meta page from the disk.
            if recoverable {
              let marker = CommitMarker(
                committedAtNs: wallClockNs(), firstSeq: start.headSeq + 1, lastSeq: out.head.headSeq, lastHash: out.head.headHash,
                checkpoints: out.written.compactMap { prepared[$0].1.request.checkpoint }, recordCRCs: crcs)
              try txn.put(dbs.meta, CommitMarker.key, marker.encoded)
              attempted = marker
            }
            // The first v3 records: mark the log so older builds refuse it (with them, atomically).
            if markFormat {
              var marker = [UInt8]()
              marker.appendBE(UInt32(RecordFormat.formatVersion))
              try txn.put(dbs.meta, MetaKey.format, marker)
            }
          }
          built = monotonicNs()
          return out
        }
      }
      committed = monotonicNs()
      cond.lock()
      gather = GatherState(queuedAtCommit: queue.count, groupCalls: batch.count, commitNs: committed - built)
      cond.unlock()
      // Durable: publish the new head, then feed subscribers, then resume the callers.
      head = outcome.head
      lastCheckpoint = outcome.lastCheckpoint
      if !outcome.hashes.isEmpty { formatMarked = true }
      let newHead = outcome.head
      shared.state.withLock {
        $0.headSeq = newHead.headSeq
        $0.headHash = newHead.headHash
      }
      if !outcome.hashes.isEmpty {
        stored = true
        shared.counters.commits.add(1, ordering: .relaxed)
        shared.counters.appendedEvents.add(UInt64(outcome.hashes.count), ordering: .relaxed)
        // Records for live subscribers are made only when one is registered (decided under the hub's lock,
        // after the commit: one registering later finds these records in its history read), so a bulk load
        // or a gateway without watchers builds no EventRecord per event (issue 14).
        shared.hub.publish {
          var records: [EventRecord] = []
          records.reserveCapacity(outcome.hashes.count)
          var seq = start.headSeq
          var prev = start.headHash
          for p in outcome.written {
            let (events, values) = (prepared[p].1.request.events, prepared[p].1.values)
            for (e, v) in zip(events, values) {
              seq += 1
              let hash = outcome.hashes[records.count]
              records.append(
                EventRecord(
                  seq: seq, timestampNs: e.timestampNs ?? 0, type: e.type, aggregate: e.aggregate, actor: e.actor,
                  requestID: e.requestID, payloadVersion: e.payloadVersion, dictionaryID: v.raw ? 0 : dictID,
                  payload: e.payload, hash: hash, previousHash: prev,
                  storedSize: v.unsealed.count + RecordFormat.checksumSize))
              prev = hash
            }
          }
          return records
        }
      }
      for (i, r) in outcome.ranges { results[i] = r }
    } catch let raw as EventLogError {
      let bytes = prepared.reduce(0) { $0 + $1.1.values.reduce(0) { $0 + $1.unsealed.count + 200 } }
      var e = classifyWriteError(raw, approximateBytes: bytes)
      // Its pages (marker included) may be on disk: CommitRecovery must never put this commit back.
      if let attempted, !CommitRecovery.recordAborted(attempted, directory: shared.directory) {
        let said = e.message.replacingOccurrences(of: "; nothing of this transaction was written", with: "")
        e = EventLogError(
          code: e.code,
          message: said + "; the commit may still be stored: its failure could not be recorded in \(CommitRecovery.abortedFile)",
          lmdbCode: e.lmdbCode, errno: e.errno)
      }
      if e.code == .diskFull {
        shared.logger.error("event log append failed: disk full", metadata: ["error": "\(e)"])
      } else {
        shared.logger.error("event log append failed", metadata: ["error": "\(e)"])
      }
      for (i, _) in prepared { results[i] = .failure(e) }
    } catch {
      for (i, _) in prepared { results[i] = .failure(EventLogError(code: .storage, message: "\(error)")) }
    }

    shared.counters.appendCalls.add(UInt64(batch.count), ordering: .relaxed)
    _ = shared.counters.largestBatchCalls.max(UInt64(batch.count), ordering: .relaxed)
    for (i, r) in batch.enumerated() {
      let result = results[i] ?? .failure(EventLogError(code: .storage, message: "append produced no result"))
      if case .failure(let e) = result, e.code == .conflict {
        shared.counters.conflicts.add(1, ordering: .relaxed)
      }
      r.completion(result)
    }
    if stored {
      let c = shared.counters
      c.prepareNs.add(encodedAt - started, ordering: .relaxed)
      c.transactionNs.add(built - encodedAt, ordering: .relaxed)
      c.commitNs.add(committed - built, ordering: .relaxed)
      c.resumeNs.add(monotonicNs() - committed, ordering: .relaxed)
    }
  }
}
