import Foundation
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// What `forward start` checks before and after it starts `ssh -L`, so a port it cannot listen on is
/// one readable line and a non-zero exit in both modes (OpenShell: openshell-behavior.md §1G, where ssh
/// runs with `ExitOnForwardFailure=yes` and `-f`), never a success followed by a dead forward.
enum ForwardPort {
  /// Binds (and releases) every address `bind` resolves to on TCP `port`, with `SO_REUSEADDR` as ssh
  /// binds its listener, so a port another process listens on is found before ssh is started.
  /// - Throws: `CLIError` "cannot forward ADDR:PORT: address already in use" (or the bind's other error,
  ///   e.g. "cannot assign requested address" for an address this machine does not have).
  static func checkFree(_ bind: String, _ port: Int) throws {
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_flags = AI_PASSIVE
    var res: UnsafeMutablePointer<addrinfo>?
    let host = bind == "*" ? nil : bind
    let rc = getaddrinfo(host, String(port), &hints, &res)
    guard rc == 0, let first = res else {
      throw CLIError("cannot forward \(bind):\(port): \(String(cString: gai_strerror(rc)).lowercased())")
    }
    defer { freeaddrinfo(res) }
    var ai: UnsafeMutablePointer<addrinfo>? = first
    while let a = ai {
      let fd = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
      if fd >= 0 {
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let ok = Glibc.bind(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 && listen(fd, 1) == 0
        let err = errno
        close(fd)
        if !ok { throw CLIError("cannot forward \(bind):\(port): \(reason(err))") }
      }
      ai = a.pointee.ai_next
    }
  }

  /// `strerror` in lower case ("address already in use").
  static func reason(_ err: Int32) -> String {
    let text = String(cString: strerror(err))
    return text.prefix(1).lowercased() + text.dropFirst()
  }

  /// One line for ssh's failure to set the forward up, from its stderr: a bind failure becomes the same
  /// line ``checkFree(_:_:)`` gives (another process took the port in between); otherwise ssh's last line.
  static func failure(_ bind: String, _ port: Int, sshStderr: String, status: Int32) -> String {
    let lines = sshStderr.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    if lines.contains(where: { $0.hasPrefix("bind ") && $0.contains("Address already in use") }) {
      return "cannot forward \(bind):\(port): address already in use"
    }
    if lines.contains(where: { $0.hasPrefix("bind ") && $0.contains("Permission denied") }) {
      return "cannot forward \(bind):\(port): permission denied"
    }
    let last = lines.last(where: { !$0.hasPrefix("channel_setup_fwd_listener") && $0 != "Could not request local forwarding." }) ?? "ssh exit \(status)"
    return "cannot forward \(bind):\(port): \(last)"
  }

  /// Whether an ssh stderr line is part of its report that a local listener could not be set up.
  static func isListenerFailure(_ line: String) -> Bool {
    line.hasPrefix("bind [") || line.hasPrefix("channel_setup_fwd_listener") || line == "Could not request local forwarding."
  }

  /// The lines read from `fd` until end of file (then `fd` is closed).
  static func lines(_ fd: Int32) -> AsyncStream<String> {
    AsyncStream { continuation in
      Task {
        var pending = Data()
        for await chunk in readChunks(fd) {
          pending.append(chunk)
          while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
            continuation.yield(String(decoding: pending[pending.startIndex..<nl], as: UTF8.self))
            pending = Data(pending[(nl + 1)...])
          }
        }
        if !pending.isEmpty { continuation.yield(String(decoding: pending, as: UTF8.self)) }
        continuation.finish()
      }
    }
  }

  /// The pid of this user's ssh that serves `-L spec` (the process `ssh -f` left running after it forked),
  /// found in `/proc`; nil when there is none.
  static func sshServing(_ spec: String) -> Int32? {
    let uid = getuid()
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    var found: [Int32] = []
    for entry in entries {
      guard let pid = Int32(entry) else { continue }
      var st = stat()
      guard stat("/proc/\(pid)", &st) == 0, st.st_uid == uid else { continue }
      guard let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
      let words = cmd.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
      if words.first?.hasSuffix("ssh") == true, words.contains(spec) { found.append(pid) }
    }
    return found.max()
  }
}
