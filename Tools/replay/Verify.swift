import ArgumentParser
import EventLog
import Foundation
import LogTools
import Projections

struct Verify: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Check checksums, the hash chain, every payload, and the newest snapshot.")
  @Argument(help: "Log directory.") var dir: String
  @Option(name: .shortAndLong, help: "Output: text or json.") var output: String = "text"
  @Option(
    help: ArgumentHelp(
      "Also check the signed audit checkpoints against this Ed25519 public key (PEM; the gateway writes it as keys/audit-checkpoint.pub.pem — use a copy kept off the host). Fails when a checkpoint does not match or none is signed by this key.",
      valueName: "FILE")) var publicKey: String?
  @Flag(
    help:
      "With --public-key: accept records newer than the last signed checkpoint in a log no gateway holds (one that crashed and was not started since). Without it they fail the check: removing the newest checkpoints is how a rewrite of the recent records would hide. A log a running gateway holds (its writer lock is taken) passes without it, and the records not signed yet are named on an UNSIGNED TAIL line."
  )
  var allowUnsignedTail = false

  func run() throws {
    try LogTools_run {
      let key = try publicKey.map { path in
        do { return try CheckpointSignature.loadPublicKey(path: path) } catch let e as CheckpointKeyError { throw ToolError(e.description) }
      }
      let log: EventLog
      do {
        log = try openLog(dir, readOnly: true, rawErrors: true)
      } catch let e as EventLogError where e.code == .corrupt {
        // The structural walk refused the file before liblmdb read it (a damaged page never crashes verify).
        if output == "json" {
          print("{\"ok\": false, \"problem\": \(String(decoding: try JSONEncoder().encode(e.message), as: UTF8.self))}")
        } else {
          print("FAILED: \(e.seq.map { "seq \($0): " } ?? "")\(e.message)")
        }
        throw ExitCode(2)
      }
      defer { log.close() }
      var result = try LogVerifier.verify(log, progress: ProgressBar(label: "verify").callback)
      // A log a running gateway holds (its writer lock is taken) always has records after the newest checkpoint.
      let liveWriter = EventLog.writerPID(directory: dir)
      var liveTail: ClosedRange<UInt64>?
      if let key, result.firstBadSeq == nil {
        let report = try CheckpointVerifier.verify(log, key: key)
        result.checkpoints = report
        if !report.ok, result.problem == nil {
          result.problem = report.problem ?? "no audit checkpoint in this log is signed by the given public key (\(report.otherKey) by other keys)"
          result.firstBadSeq = report.badCheckpointSeq
        } else if report.ok, let tail = report.unsignedTail(headSeq: result.headSeq), liveWriter != nil,
          report.otherKeyCoversThrough <= report.coveredThrough + 1
        {
          liveTail = tail  // expected while the gateway runs: OK, and said loudly below
          result.unsignedTail = [tail.lowerBound, tail.upperBound]
        } else if report.ok, result.headSeq > report.coveredThrough + 1, !allowUnsignedTail, result.problem == nil {
          // A stopped gateway's log ends with its shutdown checkpoint (covering all but itself).
          result.problem =
            report.otherKeyCoversThrough > report.coveredThrough + 1
            ? "records \(report.coveredThrough + 2)…\(result.headSeq) are signed by another key, not by the given one (a restored or recreated "
              + "gateway signs with its own key: verify with that gateway's public key too); --allow-unsigned-tail accepts them"
            : "records \(report.coveredThrough + 2)…\(result.headSeq) are not covered by a signed checkpoint and no gateway holds the log: "
              + "the gateway crashed (start it once: it signs at start), or checkpoints after seq \(report.coveredThrough + 1) were removed; "
              + "--allow-unsigned-tail accepts them"
          result.firstBadSeq = report.coveredThrough + 2
        }
      }
      if output == "json" {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try e.encode(result), as: UTF8.self))
      } else if result.ok {
        print(
          "OK: \(result.records) records, head seq \(result.headSeq), head hash \(result.headHash.prefix(16))…"
            + (result.snapshotSeq > 0 ? ", snapshot at seq \(result.snapshotSeq) matches" : ", no snapshot")
            + (log.fileReport.map { ", \($0.treePages) pages in use and \($0.freePages) free checked" }
              ?? ", file structure not walked (a live writer has the log open)"))
        if let c = result.checkpoints {
          // The record right after the newest covered one is normally that checkpoint itself.
          let newer =
            result.headSeq <= c.coveredThrough
            ? ""
            : result.headSeq == c.coveredThrough + 1
              ? "; record \(result.headSeq) is that checkpoint itself (a checkpoint signs the record before it)"
              : c.otherKeyCoversThrough > c.coveredThrough + 1
                ? "; records \(c.coveredThrough + 2)…\(result.headSeq) are signed by another key (a restored or recreated gateway's own)"
                : "; records \(c.coveredThrough + 2)…\(result.headSeq) are newer than the last checkpoint (not yet signed)"
          print("signed: \(c.valid) checkpoint(s) verified; records 1…\(c.coveredThrough) vouched for by the key\(newer)")
        }
        if let liveTail { print(CheckpointReport.unsignedTailLine(liveTail) + ((liveWriter ?? -1) > 0 ? " (pid \(liveWriter ?? -1))" : "")) }
        if key == nil {
          // Without the key only the hash chain was checked: a rewritten chain or a cut tail still verifies.
          print(
            "signatures not checked: no --public-key given (the hash chain alone cannot show a log rewritten from some record on, "
              + "or records removed from its end; give the gateway's audit-checkpoint.pub.pem, copied off its host)")
        }
      } else {
        let at = result.firstBadSeq.map { "seq \($0): " } ?? ""
        print("FAILED: \(at)\(result.problem ?? "unknown problem")")
      }
      if !result.ok { throw ExitCode(2) }
    }
  }
}
