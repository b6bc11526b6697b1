import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Issue 17: `openshell-replay` on damaged logs never crashes, and `--salvage` saves what precedes the damage.
@Suite struct DamagedLogToolTests {
  /// The sandbox-lifecycle fixture as first generated, with version 1 records (magic "OSEV"): kept apart
  /// from Fixtures/, which `openshell-fixtures generate` rewrites in the current format, so that damaging,
  /// verifying and salvaging a v1 log stays covered.
  static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("log-data/v1-sandbox-lifecycle.mdb").path

  /// Writes `bytes` as a log directory's data.mdb under `env` and returns the directory.
  static func logDir(_ env: CLIEnv, _ bytes: [UInt8]) throws -> String {
    let dir = env.root.appendingPathComponent("log-\(UUID().uuidString.prefix(8))").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try Data(bytes).write(to: URL(fileURLWithPath: dir + "/data.mdb"))
    return dir
  }

  static func le64(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }

  /// Byte offset of the current meta page (the one with the higher transaction id).
  static func currentMeta(_ b: [UInt8]) -> Int { le64(b, 4096 + 16 + 128) > le64(b, 16 + 128) ? 4096 : 0 }

  /// Crafted damage that makes liblmdb read outside its map (the crashes of issue 17) and a flip campaign:
  /// `verify` answers OK (exit 0) or FAILED (exit 2) every time, and never dies of a signal.
  @Test func verifyNeverCrashesOnDamagedFiles() throws {
    let env = try CLIEnv("verify-damage")
    defer { env.cleanup() }
    let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.fixture)))
    let ok = try env.replay(["verify", try Self.logDir(env, original)])
    #expect(ok.code == 0 && ok.out.hasPrefix("OK:"), "\(ok)")

    var crafted: [(String, [UInt8])] = []
    var b = original
    let meta = Self.currentMeta(b)
    for i in 0..<8 { b[meta + 16 + 72 + 40 + i] = i < 3 ? 0xFF : 0 }  // main tree root → page 16,777,215
    crafted.append(("main root beyond the file", b))
    b = original
    for i in 0..<8 { b[meta + 16 + 128 + i] = 0 }  // current txnid → 0: liblmdb would fall back to the older meta
    crafted.append(("current meta's txnid zeroed", b))
    crafted.append(("empty file", []))
    crafted.append(("truncated to one page", Array(original.prefix(4096))))
    crafted.append(("truncated inside the last page", Array(original.dropLast(1000))))
    for (what, bytes) in crafted {
      let r = try env.replay(["verify", try Self.logDir(env, bytes)])
      #expect(r.code == 2, "\(what): \(r)")
      #expect(r.out.hasPrefix("FAILED:") && r.out.contains("data.mdb"), "\(what): \(r)")
    }

    // A FIFO in data.mdb's place: refused at once, never a hang.
    let fifoDir = env.root.appendingPathComponent("fifo").path
    try FileManager.default.createDirectory(atPath: fifoDir, withIntermediateDirectories: true)
    #expect(mkfifo(fifoDir + "/data.mdb", 0o600) == 0)
    let fifo = try env.replay(["verify", fifoDir])
    #expect(fifo.code == 2 && fifo.out.contains("not a regular file"), "\(fifo)")

    var detected = 0
    var passed = 0
    var crashed: [String] = []
    var x: UInt64 = 0xD1B5_4A32_D192_ED03
    for i in 0..<60 {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17
      var bytes = original
      let at = i * (original.count / 60) + Int(x % UInt64(original.count / 60))
      bytes[at] ^= UInt8(1 << Int((x >> 40) % 8))
      let r = try env.replay(["verify", try Self.logDir(env, bytes)])
      switch r.code {
      case 0: passed += 1
      case 2: detected += 1
      default: crashed.append("byte \(at): \(r)")
      }
    }
    print("verify flip campaign: 60 flips, \(detected) detected, \(passed) passed (unused bytes), \(crashed.count) crashed or failed otherwise")
    #expect(crashed.isEmpty, "\(crashed)")
  }

  /// A record damaged in the middle: export/state/audit stop at it, `--salvage` keeps every record before it
  /// (saying so), and the salvaged archive imports into a log that verifies.
  @Test func salvageKeepsWhatPrecedesTheFirstBadRecord() throws {
    let env = try CLIEnv("salvage")
    defer { env.cleanup() }
    var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.fixture)))
    let magic = Array("OSEV".utf8)
    let target: UInt64 = 6
    var hits = 0
    for i in 0..<(bytes.count - 100) where Array(bytes[i..<(i + 4)]) == magic {
      let seq = (0..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[i + 8 + $1]) }
      if seq == target {
        bytes[i + 50] ^= 0x01  // inside the previous-hash field: the checksum no longer matches
        hits += 1
      }
    }
    #expect(hits >= 1)
    let dir = try Self.logDir(env, bytes)
    let v = try env.replay(["verify", dir])
    #expect(v.code == 2 && v.out.contains("seq \(target)"), "\(v)")
    let archive = env.root.appendingPathComponent("salvaged.oslog").path
    let plain = try env.replay(["export", dir, archive])
    #expect(plain.code == 1, "plain export stops at the bad record")
    #expect(plain.err.contains("--salvage uses the records before it"), "the error says how to use what precedes the damage: \(plain)")
    let e = try env.replay(["export", "--salvage", dir, archive])
    #expect(e.code == 0, "\(e)")
    #expect(e.err.contains("salvage: using records 1...\(target - 1)") && e.err.contains("seq \(target)"), "\(e)")
    #expect(e.out.contains("exported \(target - 1) records"), "\(e)")
    let restored = env.root.appendingPathComponent("restored").path
    let i = try env.replay(["import", archive, restored])
    #expect(i.code == 0, "\(i)")
    let rv = try env.replay(["verify", restored])
    #expect(rv.code == 0 && rv.out.contains("OK: \(target - 1) records"), "\(rv)")
    for cmd in [["state", "--salvage", dir], ["audit", "--salvage", dir]] {
      let r = try env.replay(cmd)
      #expect(r.code == 0 && r.err.contains("salvage: using records 1...\(target - 1)"), "\(cmd): \(r)")
    }
    // Restoring the damaged log into a new gateway is refused, says how to salvage, and leaves no directory.
    let r = try env.replay(["restore", dir, "--gateway", "fresh"])
    #expect(r.code != 0 && r.err.contains("export --salvage"), "\(r)")
    #expect(!FileManager.default.fileExists(atPath: env.state.appendingPathComponent("openshell/gateways/fresh").path), "no half-made gateway dir")
    let beyond = try env.replay(["state", "--at", "99999", restored])
    #expect(beyond.code != 0 && beyond.err.contains("seq 99999 is beyond the head of the log (seq \(target - 1))"), "\(beyond)")
    for cmd in [["state", dir], ["audit", dir]] {
      let r = try env.replay(cmd)
      #expect(r.code != 0 && r.err.contains("--salvage uses the records before it"), "without --salvage it stops at the bad record and says so: \(cmd): \(r)")
    }
  }
}
