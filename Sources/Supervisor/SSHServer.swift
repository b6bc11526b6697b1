import Dispatch
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import SandboxConfinement
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// The sandbox's SSH server: Debian's OpenSSH `sshd` in inetd mode (`sshd -i`), one per relay channel
/// (`RelayOpen{service_id: "ssh"}`), its stdin/stdout bridged to the channel's `RelayStream`
/// (OpenShell: enforcement-and-ssh.md §1.5 steps 4–5; why sshd and not swift-nio-ssh: DESIGN.md).
///
/// Confinement: `sshd` is a workload process like any other — started by the launcher with the
/// sandbox's plan (user `sandbox`, no capabilities, no_new_privs, Landlock, seccomp, the sandbox's
/// network namespace), so the shell, `scp`, `sftp-server` and everything a session starts inherit
/// exactly that. The SSH server's plan adds only: read access to the host key file, and read-write
/// access to `/dev/null`, `/dev/tty`, `/dev/ptmx` and `/dev/pts` (the sandbox's own devpts instance) so that a
/// session can have a terminal.
///
/// Authentication: the gateway's session token (checked by ForwardTcp) is the credential; sshd
/// accepts the `none` method (`PermitEmptyPasswords`; the sandbox's generated `/etc/passwd` gives
/// `sandbox` an empty password field, Gateway `SandboxUser`), as OpenShell's server does, and can only
/// ever log in the sandbox user (it runs as that user, without privileges). Not an
/// `AuthorizedKeysCommand` that accepts any key: sshd runs that only from a root-owned path, and in the
/// user namespace of a gateway that is not root nothing is root-owned (the host's root shows as 65534),
/// so every login of such a sandbox was refused (issue 11, seen with `LogLevel DEBUG3`: "Unsafe
/// AuthorizedKeysCommand: bad ownership"). The host key is the one the gateway
/// generated for this start (`/run/openshell/ssh_host_ed25519_key`); its fingerprint is what clients pin.
/// Sessions cannot read it: each one starts through the launcher's `--ssh-session` mode
/// (`ForceCommand`), which adds a Landlock layer without the key (SandboxConfinement/SSHSessionShell.swift).
enum SSHServer {
  static let sshd = "/usr/sbin/sshd"
  static let sftpServer = "/usr/lib/openssh/sftp-server"
  static let hostKey = SandboxProtocol.credentialsDirectory + "/ssh_host_ed25519_key"

  /// The `sshd` command line: no config file, every option given with `-o`; the workload environment
  /// (proxy variables, provider placeholders, spec env) reaches sessions through `SetEnv`. Entries
  /// whose value cannot be quoted safely for sshd's parser (a `"`, `\` or control character) are left out.
  /// - Parameter session: the session's own launcher options (``sessionPlan(_:)``), run as `ForceCommand`.
  static func command(environment: [String: String], session: [String]) -> [String] {
    var pairs: [String] = []
    for (k, v) in environment.sorted(by: { $0.key < $1.key }) {
      guard !k.isEmpty, k.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }),
        !v.contains(where: { $0 == "\"" || $0 == "\\" || $0.asciiValue.map { $0 < 0x20 || $0 == 0x7f } ?? false })
      else { continue }
      pairs.append("\"\(k)=\(v)\"")
    }
    var options = [
      // `none` succeeds for `sandbox` (empty password field) and nothing else is offered: no public key
      // round trip, no key file or command (see the type's documentation). sshd's `none` method needs
      // PasswordAuthentication on; `AuthenticationMethods=none` keeps `password` from being offered to
      // other login names (checked with Debian's sshd: "Authentications that can continue:" is empty).
      "HostKey=\(hostKey)", "UsePAM=no", "PermitEmptyPasswords=yes", "PasswordAuthentication=yes", "AuthenticationMethods=none",
      "PubkeyAuthentication=no",
      "AuthorizedKeysFile=none", "KbdInteractiveAuthentication=no", "PermitRootLogin=no", "AllowUsers=\(SSHServer.user)", "PidFile=none",
      "StrictModes=no", "PrintMotd=no", "PrintLastLog=no", "UseDNS=no", "LogLevel=ERROR", "X11Forwarding=no",
      // The agent controls the sandbox user's home: no ~/.ssh/rc run in front of an operator's session (its
      // output would lead the session's stdout, e.g. a download's tar stream), no environment from there,
      // and no forwarding of the operator's ssh-agent or of Unix sockets into the sandbox. TCP forwarding
      // stays (`openshell forward`).
      "PermitUserRC=no", "PermitUserEnvironment=no", "AllowAgentForwarding=no", "AllowStreamLocalForwarding=no",
      "PermitTunnel=no",
      "Subsystem=sftp \(sftpServer)",
      // Every session first drops the host key (SSHSessionShell in SandboxConfinement); sshd runs the
      // command with `sh -c`, so each word is single-quoted.
      "ForceCommand=" + ([SandboxProtocol.launcherPath, "--ssh-session"] + session).map(shellQuote).joined(separator: " "),
    ]
    if !pairs.isEmpty { options.append("SetEnv=" + pairs.joined(separator: " ")) }
    return [sshd, "-i", "-e", "-f", "/dev/null"] + options.flatMap { ["-o", $0] }
  }

  static let user = "sandbox"

  /// sshd's error for every `none` login attempt in a sandbox (`sandbox`, or `NOUSER` for a refused name):
  /// it looks up the password's expiry in the shadow database, which a sandbox does not have (the host's
  /// `/etc/shadow` is hidden, Gateway `BubblewrapCommand`). Not worth a warning per login.
  static func isExpectedNoise(_ line: Substring) -> Bool {
    line.hasPrefix("Could not get shadow information for ")
  }

  /// The terminal devices a session may use.
  static let terminalDevices = ["--rw", "/dev/null", "--rw", "/dev/tty", "--rw", "/dev/ptmx", "--rw", "/dev/pts"]

  /// Extra launcher options for the SSH server (before `--`): see the type's documentation. The launcher
  /// itself is executable, for the sessions' ForceCommand.
  static let planExtras = ["--ro", hostKey, "--ro", SandboxProtocol.launcherPath] + terminalDevices

  /// The options of a session's own layer: the workloads' plan without user and network namespace (the
  /// session already runs as that user, in that namespace) plus the terminal devices, no host key.
  static func sessionPlan(_ plan: ConfinementPlan?) -> [String] {
    guard var p = plan else { return [] }
    p.uid = nil
    p.gid = nil
    p.groups = []
    p.networkNamespacePath = nil
    return p.launcherArguments + terminalDevices
  }

  /// One word for `sh -c`: single-quoted (a `'` inside becomes `'\''`).
  static func shellQuote(_ word: String) -> String { "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'" }
}

extension Session {
  /// One SSH relay channel: starts `sshd -i` through the launcher, copies the channel's bytes to its
  /// stdin and its stdout to the channel. The channel ends when sshd exits (its stdout closes) or when
  /// the gateway ends the stream (the client went away): sshd's process group is then killed.
  func relaySSH(_ open: Openshell_V1_RelayOpen) async {
    let process: SpawnedProcess
    do {
      process = try workload.spawnServer(
        SSHServer.command(environment: workload.environment([:]), session: SSHServer.sessionPlan(workload.launch.confinement)),
        extraPlan: SSHServer.planExtras)
    } catch {
      logs.log("ssh: cannot start the SSH server: \(error)", level: "ERROR")
      _ = try? await client.relayStream(
        request: StreamingClientRequest(metadata: metadata) { writer in
          try await writer.write(.with { $0.init_p = .with { $0.channelID = open.channelID } })
        }
      ) { _ in }
      return
    }
    let pid = process.pid
    let input = PipeWriter(fd: process.stdin!)
    let stderrTask = Task {
      for await chunk in readChunks(process.stderr!) {
        for line in String(decoding: chunk, as: UTF8.self).split(separator: "\n") where !line.isEmpty && !SSHServer.isExpectedNoise(line) {
          logs.log("sshd: \(line)", level: "WARN")
        }
      }
    }
    do {
      try await client.relayStream(
        request: StreamingClientRequest(metadata: metadata) { writer in
          try await writer.write(.with { $0.init_p = .with { $0.channelID = open.channelID } })
          // sshd's output in chunks of up to 256 KiB (its pipe grown to one chunk), at most 4 ahead (1 MiB).
          // (Idle sessions that ended early with the grown pipe were PipeWriter's double close, 9c001a4.)
          let output = BoundedPipeReader(fd: process.stdout!, chunkSize: 256 << 10, depth: 4)
          for await chunk in output.chunks {
            try await writer.write(.with { $0.data = chunk })
            output.consumed()
          }
        }
      ) { response in
        for try await frame in response.messages {
          if case .data(let d)? = frame.payload { await input.write(d) }
        }
        // The gateway ended the channel: sshd sees EOF on stdin; a session that keeps running is
        // ended below, so its stdout closes and the request side finishes too.
        input.close()
        Task {
          try await Task.sleep(for: .seconds(2))
          kill(-pid, SIGKILL)
        }
      }
    } catch {
      FileHandle.standardError.write(Data("openshell-sandbox: ssh relay \(open.channelID): \(error)\n".utf8))
    }
    input.close()
    // The client is gone or sshd ended: give it a moment to exit by itself, then end its group.
    let reaper = Task {
      try await Task.sleep(for: .seconds(2))
      kill(-pid, SIGKILL)
    }
    _ = await Spawner.wait(pid)
    reaper.cancel()
    kill(-pid, SIGKILL)
    workload.finished(pid)
    stderrTask.cancel()
  }
}

/// Writes to a pipe in order on its own serial queue, so a full pipe never blocks a concurrency thread;
/// at most 1 MiB waits in the queue (the caller is suspended beyond that, which in turn stops reading
/// the relay and lets HTTP/2 flow control hold the sender).
final class PipeWriter: @unchecked Sendable {
  private let fd: Int32
  private let queue = DispatchQueue(label: "openshell.pipe-writer")
  private let credit = ByteCredit(limit: 1 << 20)
  private var broken = false
  /// Only touched on `queue`.
  private var closed = false

  init(fd: Int32) { self.fd = fd }

  func write(_ data: Data) async {
    await credit.acquire(data.count)
    queue.async {
      defer { self.credit.release(data.count) }
      // Never after close: the number may belong to another channel's descriptor by then.
      guard !self.broken, !self.closed else { return }
      data.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
          let n = Glibc.write(self.fd, raw.baseAddress! + offset, raw.count - offset)
          if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { self.broken = true; return }
        }
      }
    }
  }

  /// Closes the descriptor once, after the queued writes. Idempotent: a relay closes its input both when
  /// the gateway ends the channel and when the stream returns, and a second `close(2)` of the same number
  /// would close whatever descriptor another channel got since (its sshd would see end of file).
  func close() {
    credit.close()
    queue.async {
      guard !self.closed else { return }
      self.closed = true
      _ = Glibc.close(self.fd)
    }
  }
}
