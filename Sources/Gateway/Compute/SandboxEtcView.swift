import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// A root gateway's `/etc` for one sandbox: one read-only overlay mount whose top layer holds the
/// generated `passwd` and `group` and a whiteout for every hidden host entry
/// (``BubblewrapCommand/hiddenEtcEntries``), over the host's `/etc` as the lower layer. bubblewrap binds
/// the overlay at `/etc` with one mount.
///
/// Why (issue 14, CreateSandbox → READY): the other way, ``BubblewrapCommand/privateEtc(_:hostEtc:)``,
/// binds every host entry on its own, and bubblewrap 0.8 re-reads `/proc/self/mountinfo` after each bind
/// (to remount the new mount's submounts read-only), so ~140 entries cost ~23 ms of every start (kernel
/// trace: 870 reads between bwrap's two `pivot_root`s); one overlay bind costs ~1 ms.
///
/// Same guarantees as the binds: the identity files live in the sandbox's own top layer, so a host that
/// replaces `/etc/passwd` by rename (`useradd`) leaves the sandbox's `sandbox` user as it was; hidden
/// entries read as absent (ENOENT); nothing under `/etc` is writable (an overlay without an upper layer is
/// read-only). Host changes after the start are not reliably seen (the kernel leaves changes to a mounted
/// overlay's lower layer undefined), as with the binds: measured on 6.18, a host file replaced by rename
/// (`/etc/hosts`, `/etc/resolv.conf` rewritten by their tools) keeps reading as the old one, a name the
/// sandbox looked up before the host created it stays absent, and a host file removed stays readable —
/// while a directory listing already shows the host's new set of names — until the kernel evicts its
/// cached entries. Only names never looked up in the sandbox show the host's current entry.
///
/// Host mounts under `/etc` (a container's `/etc/resolv.conf`, `/etc/hosts`) are not seen through the
/// overlay, which shows the directory beneath them: ``submounts(mountinfo:)`` lists them so that they are
/// bound over it.
///
/// The mount lives in the gateway's mount namespace only until bubblewrap has bound it: it is detached
/// (``detach(base:)``) once the supervisor connects, when the sandbox stops and before its directory is
/// removed; the sandbox keeps its own copy of the mount.
enum SandboxEtcView {
  /// The top layer's directory name under the sandbox directory.
  static let topName = "etc"
  /// The mount point's directory name under the sandbox directory.
  static let viewName = "etc-view"

  /// Prepares the top layer in `base` (the generated `passwd`/`group` and the whiteouts) and mounts the
  /// overlay at `base/etc-view`.
  /// - Returns: the mount point, or nil when no overlay can be mounted here (not root, no overlay
  ///   filesystem, a `base` path the mount options cannot carry); the caller then binds the entries one
  ///   by one. The reason is in `fallbackReason`.
  /// - Throws: ``SpawnError`` when the top layer cannot be written.
  static func mount(base: String, passwd: String, group: String, hostEtc: String = "/etc") throws -> (view: String?, fallbackReason: String?) {
    let fm = FileManager.default
    let top = base + "/" + topName
    let view = base + "/" + viewName
    detach(base: base)
    try? fm.removeItem(atPath: top)
    try fm.createDirectory(atPath: top, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    try FileWriting.write(top + "/passwd", passwd, mode: 0o644)
    try FileWriting.write(top + "/group", group, mode: 0o644)
    guard geteuid() == 0 else { return (nil, "not root") }
    // Commas separate mount options and colons separate layers; a path holding either (or a backslash)
    // cannot be passed safely.
    guard !(top + hostEtc).contains(where: { $0 == "," || $0 == ":" || $0 == "\\" || $0.isWhitespace }) else {
      return (nil, "the sandbox directory's path holds a character overlay options cannot carry")
    }
    for entry in BubblewrapCommand.hiddenEtcEntries.sorted() where entry != "passwd" && entry != "group" {
      // A whiteout: a character device 0/0 hides the lower layer's entry of that name.
      guard mknod(top + "/" + entry, S_IFCHR | 0o000, 0) == 0 else {
        return (nil, "cannot make a whiteout for /etc/\(entry): \(String(cString: strerror(errno)))")
      }
    }
    try? fm.createDirectory(atPath: view, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    let options = "ro,lowerdir=\(top):\(hostEtc)"
    guard Glibc.mount("overlay", view, "overlay", UInt(MS_RDONLY | MS_NOSUID | MS_NODEV), options) == 0 else {
      return (nil, "cannot mount an overlay /etc: \(String(cString: strerror(errno)))")
    }
    return (view, nil)
  }

  /// Detaches `base/etc-view` from the gateway's mount namespace (lazily: a sandbox that bound it keeps
  /// its copy). Nothing happens when it is not mounted.
  static func detach(base: String) {
    _ = umount2(base + "/" + viewName, Int32(MNT_DETACH))
  }

  /// Mount points strictly under `/etc` in `mountinfo` (the text of `/proc/self/mountinfo`), decoded
  /// (`\040` → space), sorted, without the hidden entries and anything beneath them.
  static func submounts(mountinfo: String, hostEtc: String = "/etc") -> [String] {
    var found = Set<String>()
    for line in mountinfo.split(separator: "\n") {
      let fields = line.split(separator: " ", omittingEmptySubsequences: false)
      guard fields.count > 4 else { continue }
      let point = decodeOctal(String(fields[4]))
      guard point.hasPrefix(hostEtc + "/") else { continue }
      let first = point.dropFirst(hostEtc.count + 1).split(separator: "/").first.map(String.init) ?? ""
      if BubblewrapCommand.hiddenEtcEntries.contains(first) { continue }
      found.insert(point)
    }
    return found.sorted()
  }

  /// The host's current mount points under `/etc` (``submounts(mountinfo:hostEtc:)`` of this process).
  static func hostSubmounts() -> [String] {
    // Not String(contentsOfFile:): it stops after the first 4 KiB of a /proc file.
    guard let handle = FileHandle(forReadingAtPath: "/proc/self/mountinfo") else { return [] }
    defer { try? handle.close() }
    return submounts(mountinfo: String(decoding: handle.readDataToEndOfFile(), as: UTF8.self))
  }

  /// mountinfo escapes space, tab, newline and backslash as `\ooo`.
  static func decodeOctal(_ s: String) -> String {
    guard s.contains("\\") else { return s }
    var bytes: [UInt8] = []
    let u = Array(s.utf8)
    var i = 0
    while i < u.count {
      if u[i] == UInt8(ascii: "\\"), i + 3 < u.count, let v = UInt8(String(decoding: u[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
        bytes.append(v)
        i += 4
      } else {
        bytes.append(u[i])
        i += 1
      }
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}
