import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// A real remote host for `gateway start --remote` tests: Debian's OpenSSH server (`sshd`) in a
/// network namespace the test creates, reached over a veth pair on a private /29
/// (`10.251.<n>.0/29`: this machine `.1`, the host `.2`, `.3` unused so that it is unreachable), with
/// key-only login as an unprivileged user created for the test (no sudo, no password, no groups).
///
/// Files: a private directory with the client keys (`id_user`, `id_wrong`), the host key,
/// `known_hosts`, `sshd_config` and `ssh_config` (for `OPENSHELL_SSH_CONFIG`: `Host remote-test` is
/// the alias with the user's key; every host is checked against `known_hosts`, never accepted blindly).
/// ``destroy()`` kills what runs as the test user (by pid), removes the user, the namespace (and
/// with it the veth pair) and the files.
final class SSHHostFixture {
  let namespace: String
  let user: String
  let home: String
  let address: String
  let unreachable: String
  let hostSide: String
  let dir: String
  private var sshdPID: pid_t = 0

  var sshConfig: String { dir + "/ssh_config" }
  var userKey: String { dir + "/id_user" }
  var wrongKey: String { dir + "/id_wrong" }
  static let alias = "remote-test"

  /// Skips (returns nil) when not root or a tool is missing; throws when the setup itself fails.
  static func make() throws -> SSHHostFixture? {
    guard getuid() == 0 else { print("skipped: needs root (network namespaces, a test user)"); return nil }
    for tool in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen", "/usr/sbin/useradd", "/usr/bin/patchelf"]
    where !FileManager.default.isExecutableFile(atPath: tool) {
      print("skipped: \(tool) missing (scripts/setup.sh)")
      return nil
    }
    return try SSHHostFixture()
  }

  private init() throws {
    let tag = String(UUID().uuidString.lowercased().filter(\.isHexDigit).prefix(6))
    let n = Int.random(in: 1...250)
    namespace = "osh-rt-\(tag)"
    user = "oshrt\(tag)"
    home = "/home/\(user)"
    address = "10.251.\(n).2"
    unreachable = "10.251.\(n).3"
    hostSide = "ortH\(tag)"
    dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssh-host-\(tag)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    do {
      try Self.sh("ip netns add \(namespace)")
      try Self.sh("ip link add \(hostSide) type veth peer name ortN\(tag)")
      try Self.sh("ip link set ortN\(tag) netns \(namespace)")
      try Self.sh("ip addr add 10.251.\(n).1/29 dev \(hostSide) && ip link set \(hostSide) up")
      try Self.sh("ip netns exec \(namespace) sh -c 'ip addr add \(address)/29 dev ortN\(tag) && ip link set ortN\(tag) up && ip link set lo up'")
      try Self.sh("useradd --create-home --home-dir \(home) --shell /bin/sh \(user) && usermod -p '*' \(user)")
      try Self.sh("ssh-keygen -q -t ed25519 -N '' -f \(dir)/id_user -C test && ssh-keygen -q -t ed25519 -N '' -f \(dir)/id_wrong -C wrong")
      try Self.sh("ssh-keygen -q -t ed25519 -N '' -f \(dir)/host_key -C host")
      try Self.sh(
        "install -d -m 700 -o \(user) -g \(user) \(home)/.ssh && install -m 600 -o \(user) -g \(user) \(dir)/id_user.pub \(home)/.ssh/authorized_keys")
      let hostKey = try String(contentsOfFile: dir + "/host_key.pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
      try "\(address) \(hostKey)\n\(unreachable) \(hostKey)\n".write(toFile: dir + "/known_hosts", atomically: true, encoding: .utf8)
      try """
      Port 22
      ListenAddress \(address)
      HostKey \(dir)/host_key
      PidFile none
      UsePAM no
      PasswordAuthentication no
      KbdInteractiveAuthentication no
      PubkeyAuthentication yes
      AuthenticationMethods publickey
      PermitRootLogin no
      AllowUsers \(user)
      AuthorizedKeysFile .ssh/authorized_keys
      LogLevel VERBOSE

      """.write(toFile: dir + "/sshd_config", atomically: true, encoding: .utf8)
      try """
      Host \(Self.alias)
        HostName \(address)
        User \(user)
        IdentityFile \(dir)/id_user
        IdentitiesOnly yes
      Host *
        UserKnownHostsFile \(dir)/known_hosts
        StrictHostKeyChecking yes
        GlobalKnownHostsFile /dev/null

      """.write(toFile: sshConfig, atomically: true, encoding: .utf8)
      try Self.sh("install -d -m 755 /run/sshd")
      let p = try Spawner.spawn(
        "/usr/sbin/ip", ["netns", "exec", namespace, "/usr/sbin/sshd", "-D", "-e", "-f", dir + "/sshd_config"],
        environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], stdout: .appendFile(dir + "/sshd.log"), stderr: .appendFile(dir + "/sshd.log"))
      sshdPID = p.pid
      var up = false
      for _ in 0..<200 {
        if (try? Self.sh("ip netns exec \(namespace) sh -c 'cat /proc/net/tcp' | grep -q ':0016 00000000:0000 0A'")) != nil { up = true; break }
        usleep(50_000)
      }
      guard up else { throw FixtureError("sshd did not start: \((try? String(contentsOfFile: dir + "/sshd.log", encoding: .utf8)) ?? "")") }
    } catch {
      destroy()
      throw error
    }
  }

  /// The test user's uid (from /etc/passwd).
  var userID: UInt32? { getpwnam(user).map { $0.pointee.pw_uid } }

  /// Pids of every process running as the test user.
  func userProcesses() -> [Int32] {
    guard let uid = userID else { return [] }
    return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter { pid in
      var st = stat()
      return stat("/proc/\(pid)", &st) == 0 && st.st_uid == uid
    }
  }

  /// The network namespace inode of `pid` equals the fixture's namespace's.
  func inNamespace(_ pid: Int32) -> Bool {
    var a = stat()
    var b = stat()
    return stat("/proc/\(pid)/ns/net", &a) == 0 && stat("/run/netns/\(namespace)", &b) == 0 && a.st_ino == b.st_ino
  }

  func destroy() {
    for _ in 0..<3 {
      let pids = userProcesses()
      if pids.isEmpty { break }
      for pid in pids { kill(pid, SIGKILL) }
      usleep(200_000)
    }
    if sshdPID > 0 {
      kill(sshdPID, SIGTERM)
      _ = Spawner.waitBlocking(sshdPID)
      sshdPID = 0
    }
    _ = try? Self.sh("userdel -r \(user) 2>/dev/null || userdel \(user) 2>/dev/null; rm -rf \(home)")
    _ = try? Self.sh("ip netns del \(namespace) 2>/dev/null; ip link del \(hostSide) 2>/dev/null; true")
    try? FileManager.default.removeItem(atPath: dir)
  }

  /// Runs a root shell command on this machine; throws with its output when it fails.
  @discardableResult
  static func sh(_ command: String) throws -> String {
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("fixture-\(UUID().uuidString)").path
    defer { unlink(out) }
    let p = try Spawner.spawn(
      "/bin/sh", ["-c", command], environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], stdout: .appendFile(out), stderr: .appendFile(out))
    let code = Spawner.waitBlocking(p.pid)
    let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
    guard code == 0 else { throw FixtureError("\(command): exit \(code): \(text)") }
    return text
  }

  /// Runs `command` as the test user inside the host's namespace (what a login there would run).
  func asUser(_ command: String) throws -> String {
    try Self.sh("ip netns exec \(namespace) setpriv --reuid=\(user) --regid=\(user) --init-groups env HOME=\(home) sh -c \(shellQuoted(command))")
  }
}

struct FixtureError: Error, CustomStringConvertible {
  var description: String
  init(_ d: String) { description = d }
}

func shellQuoted(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
