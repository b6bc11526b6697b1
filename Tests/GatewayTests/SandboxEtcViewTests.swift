import Foundation
import Testing

@testable import Gateway

#if canImport(Glibc)
  import Glibc
#endif

/// A root gateway's sandbox `/etc` overlay (`SandboxEtcView`): what it shows, what it hides, that it is
/// read-only, that the gateway's copy goes away, and the bwrap arguments that use it. The sandbox-level
/// checks (identity kept across a host `useradd`, `/etc/shadow` absent) are in `ConfinementTests`.
@Suite("Sandbox /etc overlay")
struct SandboxEtcViewTests {
  static var isRoot: Bool { geteuid() == 0 }

  static func isMounted(_ path: String) -> Bool {
    let info = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    return SandboxEtcView.submounts(mountinfo: info, hostEtc: (path as NSString).deletingLastPathComponent).contains(path)
  }

  @Test("the overlay shows the host's entries, the generated passwd/group, hides the account databases, is read-only, and detaches", .enabled(if: isRoot))
  func overlayContents() throws {
    let fm = FileManager.default
    let base = try GatewayTestSupport.temporaryDirectory("etcview")
    let host = base + "/host-etc"
    try fm.createDirectory(atPath: host + "/ssl", withIntermediateDirectories: true)
    for (name, text) in [
      ("hosts", "127.0.0.1 localhost\n"), ("passwd", "root:x:0:0::/root:/bin/sh\n"), ("shadow", "root:secret:1::::::\n"), ("ssl/x.pem", "pem\n"),
    ] {
      try text.write(toFile: host + "/" + name, atomically: false, encoding: .utf8)
    }
    defer {
      SandboxEtcView.detach(base: base)
      try? fm.removeItem(atPath: base)
    }
    let (view, why) = try SandboxEtcView.mount(base: base, passwd: "sandbox:x:10001:10001::/sandbox:/bin/sh\n", group: "sandbox:x:10001:\n", hostEtc: host)
    let v = try #require(view, "no overlay: \(why ?? "?")")
    #expect(try String(contentsOfFile: v + "/hosts", encoding: .utf8) == "127.0.0.1 localhost\n")
    #expect(try String(contentsOfFile: v + "/ssl/x.pem", encoding: .utf8) == "pem\n")
    #expect(try String(contentsOfFile: v + "/passwd", encoding: .utf8) == "sandbox:x:10001:10001::/sandbox:/bin/sh\n")
    #expect(access(v + "/shadow", F_OK) != 0 && errno == ENOENT)
    #expect(!(try fm.contentsOfDirectory(atPath: v)).contains("shadow"))
    // A host entry added later is seen when the name was never looked up through the overlay (a name
    // looked up before stays absent until the kernel evicts it: SandboxEtcView's comment).
    try "new\n".write(toFile: host + "/added", atomically: false, encoding: .utf8)
    #expect(try String(contentsOfFile: v + "/added", encoding: .utf8) == "new\n")
    // Read-only: nothing reaches the host directory through it.
    #expect(open(v + "/created", O_WRONLY | O_CREAT, 0o644) < 0 && errno == EROFS)
    #expect(unlink(v + "/hosts") != 0 && errno == EROFS)
    #expect(fm.fileExists(atPath: host + "/hosts"))
    #expect(Self.isMounted(v))
    SandboxEtcView.detach(base: base)
    #expect(!Self.isMounted(v))
    #expect(!fm.fileExists(atPath: v + "/hosts"))
  }

  @Test(
    "retiring a data dir (gateway start --recreate, destroy) detaches an overlay a killed gateway left mounted",
    .enabled(if: isRoot))
  func reaperDetachesLeftOverlay() throws {
    let fm = FileManager.default
    let data = try GatewayTestSupport.temporaryDirectory("etcview-data")
    let base = data + "/sandboxes/" + UUID().uuidString.lowercased()
    try fm.createDirectory(atPath: base, withIntermediateDirectories: true)
    defer {
      SandboxEtcView.detach(base: base)
      try? fm.removeItem(atPath: data)
    }
    // What a gateway killed between the mount and the supervisor's connect leaves behind.
    let (view, why) = try SandboxEtcView.mount(base: base, passwd: "p\n", group: "g\n")
    let v = try #require(view, "no overlay: \(why ?? "?")")
    #expect(Self.isMounted(v))
    SandboxReaper.terminateAll(dataDirectory: data)
    // Else the archived data dir would hold a live view of the host's /etc (and could not be removed).
    #expect(!Self.isMounted(v))
    #expect(!fm.fileExists(atPath: v + "/hosts"))
  }

  @Test("a path overlay options cannot carry falls back to the binds, with the reason")
  func unsafePathFallsBack() throws {
    let base = try GatewayTestSupport.temporaryDirectory("etc,view")
    defer { try? FileManager.default.removeItem(atPath: base) }
    let (view, why) = try SandboxEtcView.mount(base: base, passwd: "p\n", group: "g\n")
    #expect(view == nil)
    #expect(why != nil)
    // The identity files are written either way (the binds use them).
    #expect(try String(contentsOfFile: base + "/etc/passwd", encoding: .utf8) == "p\n")
  }

  @Test("host mount points under /etc are found (octal escapes decoded), hidden entries are not")
  func submountsFromMountinfo() {
    let info = """
      22 27 0:21 / /proc rw,relatime - proc proc rw
      30 27 8:1 /docker/resolv.conf /etc/resolv.conf rw - ext4 /dev/sda1 rw
      31 27 8:1 /docker/hosts /etc/hosts rw - ext4 /dev/sda1 rw
      32 27 8:1 /x /etc/my\\040dir/f rw - ext4 /dev/sda1 rw
      33 27 8:1 /s /etc/shadow rw - ext4 /dev/sda1 rw
      34 27 8:1 /e /etc rw - ext4 /dev/sda1 rw
      35 27 8:1 /e /etcetera/x rw - ext4 /dev/sda1 rw
      """
    #expect(SandboxEtcView.submounts(mountinfo: info) == ["/etc/hosts", "/etc/my dir/f", "/etc/resolv.conf"])
  }

  @Test("with an overlay, bwrap binds it at /etc (plus the host's submounts) instead of one bind per entry")
  func bwrapArguments() {
    var command = BubblewrapCommand(
      hostname: "h", workspace: "/w", credentials: "/c", supervisorBinary: "/s", launcherBinary: "/l", runAsRoot: true,
      identityFiles: (passwd: "/b/etc/passwd", group: "/b/etc/group"))
    let binds = command.arguments.joined(separator: " ")
    #expect(binds.contains("--tmpfs /etc"))
    command.etcView = (path: "/b/etc-view", submounts: ["/etc/resolv.conf"])
    let args = command.arguments.joined(separator: " ")
    #expect(args.contains("--ro-bind /b/etc-view /etc --ro-bind-try /etc/resolv.conf /etc/resolv.conf"))
    #expect(!args.contains("--tmpfs /etc"))
    #expect(!args.contains("/b/etc/passwd"))
  }
}
