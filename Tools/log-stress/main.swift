// openshell-log-stress: appends to an event log in a loop and prints every acknowledged event, for crash
// tests (the test SIGKILLs this process at a random moment and checks that every printed seq is stored).
//
// Usage: openshell-log-stress <dir> [--tasks N] [--count N] [--max-batch N] [--max-payload N]
//                                   [--durability sync|nometasync|nosync] [--map-size BYTES]
//        openshell-log-stress <dir> --bulk-load [--count N] [--max-batch N] [--max-payload N]
//
// Output (stdout, one flushed line per acknowledged event, written only after `append` returned):
//   READY <head seq at open>
//   ACK <seq> <payload as ASCII>
//   DONE <head seq>                (only when --count is reached)
// With --bulk-load: a bulk load into a new <dir> (EventLog.openForBulkLoad) of --count events in calls of
// --max-batch, one line `BATCH <head seq>` per committed (not yet durable) call, then finishBulkLoad and
// `DONE <head seq>`.
// Payloads are printable ASCII without spaces: "t<task>-c<counter>-e<index>-" followed by filler letters.
// Errors go to stderr with exit status 1.

import EventLog
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

struct Config {
  var dir = ""
  var tasks = 4
  var count = Int.max
  var maxBatch = 3
  var maxPayload = 600
  var durability = EventLog.Durability.sync
  var mapSize = 1 << 20
  var bulkLoad = false
}

func usage(_ why: String) -> Never {
  FileHandle.standardError.write(Data("openshell-log-stress: \(why)\n".utf8))
  exit(2)
}

func parseArgs() -> Config {
  var c = Config()
  var args = Array(CommandLine.arguments.dropFirst())
  guard !args.isEmpty else { usage("missing <dir>") }
  c.dir = args.removeFirst()
  while !args.isEmpty {
    let flag = args.removeFirst()
    if flag == "--bulk-load" {
      c.bulkLoad = true
      continue
    }
    guard let value = args.first else { usage("missing value for \(flag)") }
    args.removeFirst()
    switch flag {
    case "--tasks": c.tasks = max(1, Int(value) ?? 4)
    case "--count": c.count = max(1, Int(value) ?? 1)
    case "--max-batch": c.maxBatch = max(1, Int(value) ?? 3)
    case "--max-payload": c.maxPayload = max(40, Int(value) ?? 600)
    case "--map-size": c.mapSize = max(64 << 10, Int(value) ?? (1 << 20))
    case "--durability":
      switch value {
      case "sync": c.durability = .sync
      case "nometasync": c.durability = .noMetaSync
      case "nosync": c.durability = .noSync
      default: usage("unknown durability \(value)")
      }
    default: usage("unknown flag \(flag)")
    }
  }
  return c
}

/// Serialises stdout lines across tasks and flushes each one.
final class Output: @unchecked Sendable {
  private let lock = NSLock()
  func line(_ s: String) {
    lock.lock()
    defer { lock.unlock() }
    // One unbuffered write(2) per line: nothing acknowledged stays in a user-space buffer at SIGKILL.
    var bytes = Array((s + "\n").utf8)
    var off = 0
    while off < bytes.count {
      let n = bytes.withUnsafeMutableBytes { b -> Int in
        guard let base = b.baseAddress else { return -1 }
        return write(1, base + off, b.count - off)
      }
      if n <= 0 { exit(1) }
      off += n
    }
  }
}

/// Deterministic payload for (task, counter, index): a prefix plus filler of pseudo-random length.
func payload(task: Int, counter: Int, index: Int, maxLength: Int) -> String {
  let prefix = "t\(task)-c\(counter)-e\(index)-"
  var x = UInt64(truncatingIfNeeded: task &* 1_000_003 &+ counter &* 7919 &+ index &+ 1)
  x = x &* 0x9E37_79B9_7F4A_7C15
  let extra = Int(x >> 40) % max(1, maxLength - prefix.count)
  let letters = Array("abcdefghijklmnopqrstuvwxyz")
  var s = prefix
  for _ in 0..<extra {  // pseudo-random letters: compress to roughly 60%, so the map really fills
    x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    s.append(letters[Int(x >> 33) % letters.count])
  }
  return s
}

let config = parseArgs()
if config.bulkLoad {
  do {
    let log = try EventLog.openForBulkLoad(directory: config.dir)
    let out = Output()
    var written = 0
    while written < config.count {
      let n = min(config.maxBatch, config.count - written)
      let events = (written..<(written + n)).map { i in
        NewEvent(
          type: "stress.loaded", aggregate: AggregateRef(kind: "stress", id: "agg-\(i % 100)"), actor: "log-stress",
          requestID: "req-\(i)", payload: Array(payload(task: 0, counter: i, index: 0, maxLength: config.maxPayload).utf8))
      }
      let range = try log.appendSync(events)
      written += n
      out.line("BATCH \(range.upperBound)")
    }
    try log.finishBulkLoad()
    out.line("DONE \(log.headSeq)")
    log.close()
    exit(0)
  } catch {
    FileHandle.standardError.write(Data("openshell-log-stress: bulk load failed: \(error)\n".utf8))
    exit(1)
  }
}
var options = EventLog.Options()
options.durability = config.durability
options.initialMapSize = config.mapSize
let log: EventLog
do {
  log = try EventLog.open(directory: config.dir, options: options)
} catch {
  FileHandle.standardError.write(Data("openshell-log-stress: open failed: \(error)\n".utf8))
  exit(1)
}
let out = Output()
out.line("READY \(log.headSeq)")

let perTask = config.count == Int.max ? Int.max : (config.count + config.tasks - 1) / config.tasks
await withTaskGroup(of: Void.self) { group in
  for task in 0..<config.tasks {
    group.addTask {
      var counter = 0
      var written = 0
      while written < perTask {
        let n = 1 + (counter % config.maxBatch)
        let texts = (0..<n).map { payload(task: task, counter: counter, index: $0, maxLength: config.maxPayload) }
        let events = texts.map {
          NewEvent(
            type: "stress.appended", aggregate: AggregateRef(kind: "stress", id: "task-\(task)"),
            actor: "log-stress", requestID: "req-\(task)-\(counter)", payload: Array($0.utf8))
        }
        do {
          let range = try await log.append(events)
          for (seq, text) in zip(range, texts) { out.line("ACK \(seq) \(text)") }
        } catch {
          FileHandle.standardError.write(Data("openshell-log-stress: append failed: \(error)\n".utf8))
          exit(1)
        }
        counter += 1
        written += n
      }
    }
  }
}
out.line("DONE \(log.headSeq)")
log.close()
