import Foundation
import GRPCCore
import OpenShellAPI
import SwiftProtobuf
import Testing

@testable import Gateway

#if canImport(Glibc)
  import Glibc
#endif

/// A 16 MiB tmpfs for a gateway's data dir. `available` is false (and the tests are reported SKIPPED with
/// the reason) when this process cannot mount one (not root, no tmpfs).
enum SmallDisk {
  static func run(_ tool: String, _ args: [String]) -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = args
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    do { try p.run() } catch { return -1 }
    p.waitUntilExit()
    return p.terminationStatus
  }

  static func mount(size: String = "16m") -> String? {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tmpfs-\(UUID().uuidString.prefix(8))").path
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    guard run("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", dir]) == 0 else {
      try? FileManager.default.removeItem(atPath: dir)
      return nil
    }
    return dir
  }

  static func unmount(_ dir: String) {
    _ = run("/usr/bin/umount", ["-l", dir])
    try? FileManager.default.removeItem(atPath: dir)
  }

  static let available: Bool = {
    guard let d = mount(size: "1m") else {
      print("SKIPPED: full-disk tests need to mount a tmpfs (run as root with /usr/bin/mount)")
      return false
    }
    unmount(d)
    return true
  }()

  static func free(_ path: String) -> UInt64 {
    var st = statvfs()
    statvfs(path, &st)
    return UInt64(st.f_bavail) * UInt64(st.f_frsize)
  }

  /// Appends to `file` until the file system is full; returns the bytes written.
  @discardableResult
  static func fill(_ file: String) -> Int {
    let fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
    defer { close(fd) }
    let chunk = [UInt8](repeating: 0x5A, count: 64 * 1024)
    var total = 0
    while true {
      let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
      if n <= 0 { break }
      total += n
    }
    return total
  }
}

/// Issue 17: on a full disk every write RPC answers RESOURCE_EXHAUSTED with a clear message and no server
/// path, and a snapshot that cannot be written consumes no space.
@Suite(.serialized) struct DiskFullTests {
  static func incompressible(_ n: Int) -> Google_Protobuf_Struct {
    var g = SystemRandomNumberGenerator()
    let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) }
    return Google_Protobuf_Struct(fields: ["blob": Google_Protobuf_Value(stringValue: Data(bytes).base64EncodedString())])
  }

  @Test(.enabled(if: SmallDisk.available, "needs a mountable tmpfs (root)"))
  func writesOnAFullDiskAreResourceExhaustedAndSnapshotsTakeNoSpace() async throws {
    let mnt = try #require(SmallDisk.mount())
    defer { SmallDisk.unmount(mnt) }
    let gw = try await TestGateway.start(dataDirectory: mnt + "/gw")
    let filler = mnt + "/filler"
    let data = mnt + "/gw/log/data.mdb"
    func size(_ p: String) -> UInt64 { ((try? FileManager.default.attributesOfItem(atPath: p))?[.size] as? UInt64) ?? 0 }
    try await gw.withClient { api in
      // State worth a ~1.5 MB snapshot.
      for i in 0..<20 {
        _ = try await api.createSandbox(
          .with {
            $0.name = "heavy-\(i)"; $0.spec.template.driverConfig = Self.incompressible(60_000)
          })
      }
      // Nearly full: 800 KiB left, less than the snapshot needs. It is skipped and the file does not grow.
      SmallDisk.fill(filler)
      let full = size(filler)
      #expect(truncate(filler, off_t(full) - 800 * 1024) == 0)
      let (before, freeBefore) = (size(data), SmallDisk.free(mnt))
      await gw.running.store.snapshot()
      #expect(size(data) == before, "a snapshot that cannot be written does not grow data.mdb")
      #expect(SmallDisk.free(mnt) == freeBefore, "and consumes no space")

      // Full: every write RPC answers RESOURCE_EXHAUSTED (or succeeds from LMDB's free pages), never INTERNAL,
      // and no message names a server path.
      SmallDisk.fill(filler)
      var exhausted = 0
      func check(_ what: String, _ body: () async throws -> Void) async {
        do {
          try await body()
        } catch let e as RPCError {
          #expect(e.code == .resourceExhausted, "\(what): \(e.code) \(e.message)")
          #expect(!e.message.contains(mnt) && !e.message.contains("/gw/"), "\(what) names a server path: \(e.message)")
          #expect(e.message.contains("disk is full"), "\(what): \(e.message)")
          exhausted += 1
        } catch {
          Issue.record("\(what): \(error)")
        }
      }
      for i in 0..<30 { await check("CreateSandbox \(i)") { _ = try await api.createSandbox(.with { $0.name = "more-\(i)" }) } }
      await check("CreateProvider") {
        _ = try await api.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "gh"; $0.type = "gh"; $0.credentials = ["GITHUB_TOKEN": "t"]
            }
          })
      }
      await check("CreateWorkspace") { _ = try await api.createWorkspace(.with { $0.name = "extra" }) }
      await check("DeleteSandbox") { _ = try await api.deleteSandbox(.with { $0.name = "heavy-0" }) }
      print("full disk: \(exhausted) of 33 writes answered RESOURCE_EXHAUSTED, the rest were stored in LMDB's free pages")
      #expect(exhausted >= 3, "the disk was full for most writes (\(exhausted))")

      // Space freed: writes work again.
      try FileManager.default.removeItem(atPath: filler)
      _ = try await api.createSandbox(.with { $0.name = "after-space-freed" })
    }
    await gw.stop()
  }
}
