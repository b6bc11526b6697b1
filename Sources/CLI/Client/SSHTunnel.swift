import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// The client side of the SSH tunnel (issue 11; OpenShell: enforcement-and-ssh.md §1.5 steps 2–3).
enum SSHTunnel {
  /// Environment variable that carries the session token from `sandbox connect` to its `ssh-proxy`
  /// (so the token is never on a command line, where `ps` would show it).
  static let tokenVariable = "OPENSHELL_SSH_TOKEN"
  /// The OpenSSH client `sandbox connect` and `forward` run: `$OPENSHELL_SSH`, else `/usr/bin/ssh`.
  static var sshClient: String { ProcessInfo.processInfo.environment["OPENSHELL_SSH"].flatMap { $0.isEmpty ? nil : $0 } ?? "/usr/bin/ssh" }

  /// `~/.config/openshell/ssh`: the client key and the pinned host keys.
  static var directory: String { ClientRegistry.default.root.appendingPathComponent("ssh").path }
  static var knownHosts: String { directory + "/known_hosts" }
  static var identity: String { directory + "/id_ed25519" }

  /// The host alias of a sandbox in ssh configuration (as OpenShell: `openshell-NAME.WORKSPACE`).
  static func alias(_ name: String, workspace: String) -> String { "openshell-\(name).\(workspace)" }

  /// Creates the client key (Ed25519, no passphrase) on first use. The sandbox's SSH server accepts
  /// any key — the session token is the credential — but OpenSSH needs one to authenticate with.
  static func ensureIdentity() throws {
    let fm = FileManager.default
    if fm.fileExists(atPath: identity) { return }
    try fm.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let p = try Spawner.spawn("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "openshell", "-f", identity], environment: [:])
    guard Spawner.waitBlocking(p.pid) == 0 else { throw CLIError("ssh-keygen could not create \(identity)") }
  }

  /// Options every `ssh` we run or describe gets: the pinned host key, the client key, keep-alives.
  static func options(alias: String, knownHostsFile: String) -> [(String, String)] {
    [
      ("User", "sandbox"), ("HostKeyAlias", alias), ("UserKnownHostsFile", knownHostsFile), ("GlobalKnownHostsFile", "/dev/null"),
      ("StrictHostKeyChecking", "yes"), ("HostKeyAlgorithms", SSHHostKeyPin.hostKeyAlgorithms),
      ("KexAlgorithms", SSHHostKeyPin.kexAlgorithms), ("Ciphers", SSHHostKeyPin.ciphers), ("IdentityFile", identity), ("IdentitiesOnly", "yes"),
      ("ServerAliveInterval", "15"), ("ServerAliveCountMax", "3"), ("LogLevel", "ERROR"),
    ]
  }

  /// A new session for a sandbox (by name): CreateSshSession.
  static func createSession(_ c: ShellClient, name: String, workspace: String) async throws -> Openshell_V1_CreateSshSessionResponse {
    try await c.createSshSession(
      .with {
        $0.sandbox = name; $0.workspaceScope = SandboxCLI.scope(workspace)
      }, options: GatewayClient.options(timeout: .seconds(30)))
  }

  /// Runs the tunnel on stdin/stdout (the `ProxyCommand` side of `ssh`) until the gateway or `ssh`
  /// ends it; then exits the process (stdin may still be open). A host key that differs from `pin`
  /// cuts the connection.
  static func proxy(_ c: ShellClient, sandboxID: String, workspace: String, token: String, pin: SSHHostKeyPin?) async throws -> Never {
    let initFrame = Openshell_V1_TcpForwardFrame.with {
      $0.init_p = .with {
        $0.sandbox = sandboxID
        $0.workspace = workspace
        $0.serviceID = "ssh-proxy:\(sandboxID)"
        $0.ssh = .init()
        $0.authorizationToken = token
      }
    }
    var options = CallOptions.defaults
    options.waitForReady = false
    let pinBox = PinBox(pin)
    try await c.forwardTcp(
      request: StreamingClientRequest { writer in
        try await writer.write(initFrame)
        // stdin is read at most 4 × 256 KiB ahead of what gRPC accepted (bounded; the gateway's
        // flow control then holds `ssh` itself).
        let input = BoundedPipeReader(fd: 0, chunkSize: 256 << 10, depth: 4)
        for await chunk in input.chunks {
          try await writer.write(.with { $0.data = chunk })
          input.consumed()
        }
      }, options: options
    ) { response in
      for try await frame in response.messages {
        guard case .data(let d)? = frame.payload else { continue }
        let out = try pinBox.feed(d)
        if !out.isEmpty { writeAll(1, out) }
      }
    }
    exit(0)
  }

  static func writeAll(_ fd: Int32, _ data: Data) {
    data.withUnsafeBytes { raw in
      var offset = 0
      while offset < raw.count {
        let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
        if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { exit(0) }
      }
    }
  }
}

/// The pin, used by the one task that reads the gateway's frames.
private final class PinBox: @unchecked Sendable {
  var pin: SSHHostKeyPin?
  init(_ pin: SSHHostKeyPin?) { self.pin = pin }
  func feed(_ data: Data) throws -> Data {
    guard pin != nil else { return data }
    return try pin!.feed(data)
  }
}
