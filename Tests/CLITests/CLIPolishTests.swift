import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Error lines, argument checks and table output of the CLI: what a person reads.
@Suite("CLI messages and output", .serialized, .timeLimit(.minutes(10)))
struct CLIPolishTests {
  static let nameRule = "use 1-63 characters from A-Z a-z 0-9 . _ - (not starting with '.')"

  /// A started local gateway in its own environment; `stop()` deletes its sandboxes and stops it.
  struct RunningGateway {
    let env: CLIEnv
    let name: String
    init(_ label: String) throws {
      env = try CLIEnv(label)
      name = label
      let r = try env.run(["gateway", "start", "--name", label, "--port", "\(freePort())"])
      if r.code != 0 {
        env.cleanup()
        throw SetupError("gateway start failed: \(r)")
      }
    }
    func stop() {
      _ = try? env.run(["sandbox", "delete", "--all"])
      _ = try? env.run(["gateway", "stop", "--name", name])
      env.cleanup()
    }
  }

  struct SetupError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
  }

  @Test("a call cut off by a reset stream names the gateway and asks whether it was stopped")
  func streamReset() throws {
    let env = try CLIEnv("rst")
    defer { env.cleanup() }
    let server = try ResettingHTTP2Server()
    defer { server.close() }
    let dir = env.registryDir("fake")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let meta: [String: Any] = [
      "name": "fake", "gateway_endpoint": "http://127.0.0.1:\(server.port)", "is_remote": true, "gateway_port": server.port,
      "auth_mode": "plaintext", "type": "remote",
    ]
    try JSONSerialization.data(withJSONObject: meta).write(to: dir.appendingPathComponent("metadata.json"))

    var r = try env.run(["sandbox", "list", "-g", "fake"])
    #expect(r.code == 1, "\(r)")
    #expect(r.err == "error: the connection to gateway 'fake' closed (was it stopped?)\n", "\(r)")
    r = try env.run(["policy", "get", "sb", "-g", "fake"])
    #expect(r.code == 1, "\(r)")
    #expect(r.err == "error: the connection to gateway 'fake' closed (was it stopped?)\n", "\(r)")
    #expect(server.resets > 0)
  }

  @Test("a gateway's error is printed as its message: no status code name, no added quotes")
  func gatewayErrorMessages() throws {
    let gw = try RunningGateway("errmsg")
    defer { gw.stop() }
    let env = gw.env
    var r = try env.run(["sandbox", "create", "BadName", "--no-bootstrap"])
    #expect(r.code == 1, "\(r)")
    #expect(r.err == "error: name: sandbox name \"BadName\" must consist of lowercase letters, digits and '-' (RFC 1123 label); found \"B\"\n", "\(r)")
    r = try env.run(["sandbox", "get", "nosuch"])
    #expect(r.code == 1 && r.err == "error: sandbox default/nosuch not found\n", "\(r)")
    r = try env.run(["policy", "get", "nosuch"])
    #expect(r.code == 1 && r.err == "error: sandbox default/nosuch not found\n", "\(r)")
  }

  @Test("an unreadable, non-UTF-8 or control-character policy file is reported in one line with its path")
  func policyFileErrors() throws {
    let env = try CLIEnv("polfile")
    defer { env.cleanup() }
    let missing = env.root.appendingPathComponent("missing.yaml").path
    var r = try env.run(["policy", "set", "sb", "--policy", missing])
    #expect(r.code == 1 && r.err == "error: cannot read policy file \(missing): No such file or directory\n", "\(r)")
    r = try env.run(["sandbox", "create", "--no-bootstrap", "--policy", missing])
    #expect(r.code == 1 && r.err == "error: cannot read policy file \(missing): No such file or directory\n", "\(r)")

    r = try env.run(["policy", "set", "sb", "--policy", env.root.path])
    #expect(r.code == 1 && r.err == "error: cannot read policy file \(env.root.path): Is a directory\n", "\(r)")

    let binary = env.root.appendingPathComponent("binary.yaml").path
    var bytes: [UInt8] = Array("version: 1\n".utf8)
    for i in 0..<4096 { bytes.append(UInt8((i * 131 + 7) % 256)) }
    try Data(bytes).write(to: URL(fileURLWithPath: binary))
    r = try env.run(["policy", "set", "sb", "--policy", binary])
    #expect(r.code == 1 && r.err == "error: policy file \(binary) is not UTF-8 text\n", "\(r)")

    // Valid UTF-8 with control characters: libyaml's reader error, without the offending bytes.
    let control = env.root.appendingPathComponent("control.yaml").path
    try Data("version: 1\nfilesystem_policy:\n  read_only: [/usr\u{01}\u{02}\u{1B}[31m]\n".utf8).write(to: URL(fileURLWithPath: control))
    r = try env.run(["policy", "set", "sb", "--policy", control])
    #expect(r.code == 1, "\(r)")
    #expect(
      r.err == "error: \(control): failed to parse sandbox policy YAML: invalid YAML: control characters are not allowed (character U+0001) (line 3)\n", "\(r)")

    // A syntax error names line and column; the YAML text itself is not echoed.
    let syntax = env.root.appendingPathComponent("syntax.yaml").path
    try Data("version: 1\nfilesystem_policy:\n  read_only: [/usr\n  secret-looking-text: x\n".utf8).write(to: URL(fileURLWithPath: syntax))
    r = try env.run(["policy", "set", "sb", "--policy", syntax])
    #expect(r.code == 1, "\(r)")
    #expect(r.err.split(separator: "\n").count == 1 && r.err.hasPrefix("error: \(syntax): failed to parse sandbox policy YAML: invalid YAML: "), "\(r)")
    #expect(!r.err.contains("secret-looking-text") && r.err.contains("(line "), "\(r)")

    // A quoted key holding line breaks and a very long one: escaped and shortened, one line.
    let keys = env.root.appendingPathComponent("keys.yaml").path
    let long = String(repeating: "k", count: 1000)
    try Data("version: 1\n\"a\\nb\": 1\n\(long): 2\n".utf8).write(to: URL(fileURLWithPath: keys))
    r = try env.run(["policy", "set", "sb", "--policy", keys])
    #expect(r.code == 1, "\(r)")
    #expect(r.err.split(separator: "\n").count == 1, "\(r)")
    #expect(r.err.contains("a\\nb (line 2): unknown field `a\\nb`"), "\(r)")
    #expect(r.err.count < 1000, "\(r.err.count) characters")
  }

  @Test("policy get shows UTC date and time, policy list the whole load error")
  func policyTimesAndErrors() throws {
    let gw = try RunningGateway("poltime")
    defer { gw.stop() }
    let env = gw.env
    let base = env.root.appendingPathComponent("base.yaml").path
    try PolicyWaitTests.base.write(toFile: base, atomically: true, encoding: .utf8)
    let before = Date()
    var r = try env.run(["sandbox", "create", "pol", "--policy", base])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["policy", "get", "pol"])
    #expect(r.code == 0, "\(r)")
    let created = try #require(Self.field("Created", r.out), "\(r)")
    let f = DateFormatter()
    f.locale = Locale(identifier: "en_US_POSIX")
    f.timeZone = TimeZone(identifier: "UTC")
    f.dateFormat = "yyyy-MM-dd HH:mm:ss"
    let date = try #require(f.date(from: created), "Created: \(created)")
    #expect(f.string(from: date) == created)
    #expect(date >= before.addingTimeInterval(-2) && date <= Date().addingTimeInterval(2), "\(created)")
    r = try env.run(["policy", "get", "pol", "-o", "json"])
    let createdJSON = try #require(env.json(r)["created"] as? String, "\(r)")
    #expect(createdJSON == iso(date), "\(r)")

    let bad = env.root.appendingPathComponent("bad.yaml").path
    try PolicyWaitTests.network(host: "*").write(toFile: bad, atomically: true, encoding: .utf8)
    r = try env.run(["policy", "set", "pol", "--policy", bad, "--wait", "--timeout", "30"])
    #expect(r.code == 1, "\(r)")
    r = try env.run(["policy", "get", "pol", "--rev", "2", "-o", "json"])
    let loadError = try #require(env.json(r)["error"] as? String, "\(r)")
    #expect(loadError.count > 40, "a message long enough to have been cut: \(loadError)")
    r = try env.run(["policy", "list", "pol"])
    #expect(r.code == 0, "\(r)")
    let lines = r.out.split(separator: "\n").map(String.init)
    #expect(lines.first?.split(separator: " ", omittingEmptySubsequences: true) == ["VERSION", "HASH", "STATUS", "CREATED", "ERROR"], "\(r)")
    let row = try #require(lines.first { $0.hasPrefix("2 ") }, "\(r)")
    #expect(row.contains(" failed ") && row.hasSuffix("  " + loadError), "\(r)")
    #expect(lines.allSatisfy { !$0.hasSuffix(" ") }, "no trailing blanks: \(r)")
    let cells = row.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
    #expect(cells.count > 4 && f.date(from: cells[3] + " " + cells[4]) != nil, "CREATED is YYYY-MM-DD HH:MM:SS: \(row)")
  }

  @Test("sandbox get shows the effective confinement and the cpu/memory limits (where the host can enforce them)")
  func sandboxLimits() throws {
    let gw = try RunningGateway("limits")
    defer { gw.stop() }
    let env = gw.env
    // OpenShell's form, `--name NAME`, names the sandbox as the positional NAME does.
    var r = try env.run(["sandbox", "create", "--name", "plain"])
    try #require(r.code == 0, "\(r)")
    r = try env.run(["sandbox", "create", "other", "--name", "plain2"])
    #expect(r.code == 1 && r.err.contains("the sandbox name is given twice"), "\(r)")
    // --no-keep deletes the sandbox also when its exec is refused (here: an argument over 32 KiB).
    r = try env.run(["sandbox", "create", "refused", "--no-keep", "--", "echo", String(repeating: "x", count: 40_000)])
    #expect(r.code != 0 && r.err.contains("longer than 32 KiB") && r.err.contains("Deleted sandbox refused"), "\(r)")
    r = try env.run(["sandbox", "get", "refused"])
    #expect(r.code != 0 && r.err.contains("not found"), "the --no-keep sandbox is gone: \(r)")
    // ... and when it does not become ready in time (the wait is part of what --no-keep cleans up after).
    r = try env.run(["sandbox", "create", "slow", "--no-keep", "--", "true"], env: ["OPENSHELL_PROVISION_TIMEOUT": "0.01"])
    #expect(r.code != 0 && r.err.contains("did not become ready") && r.err.contains("Deleted sandbox slow"), "\(r)")
    r = try env.run(["sandbox", "get", "slow"])
    #expect(r.code != 0 && r.err.contains("not found"), "the --no-keep sandbox is gone: \(r)")
    r = try env.run(["sandbox", "get", "plain"])
    #expect(r.code == 0 && Self.field("Limits", r.out) == nil, "\(r)")
    // The effective confinement (issue 15): user, Landlock ABI and mode, seccomp.
    let confinement = Self.field("Confinement", r.out) ?? ""
    #expect(confinement.contains("landlock ABI") && confinement.contains("best_effort") && confinement.contains("seccomp on"), "\(r)")
    if geteuid() == 0 { #expect(confinement.hasPrefix("user sandbox (uid "), "\(r)") }
    #expect(env.json(try env.run(["sandbox", "get", "plain", "-o", "json"]))["limits"] == nil)
    r = try env.run(["sandbox", "create", "lim", "--cpu", "250m", "--memory", "64Mi"])
    if r.code != 0 {
      #expect(r.err.contains("cgroup"), "refused only for want of cgroups: \(r)")
      print("note: cpu/memory limits not supported on this host; the Limits line was not checked")
      return
    }
    r = try env.run(["sandbox", "get", "lim"])
    #expect(r.code == 0, "\(r)")
    #expect(Self.field("Limits", r.out) == "cpu 250m, memory 64Mi", "\(r)")
    r = try env.run(["sandbox", "get", "lim", "-o", "json"])
    #expect(env.json(r)["limits"] as? [String: String] == ["cpu": "250m", "memory": "64Mi"], "\(r)")
    r = try env.run(["sandbox", "get", "lim", "-o", "yaml"])
    #expect(r.out.contains("limits:\n  cpu: 250m\n  memory: 64Mi\n"), "\(r)")
  }

  @Test("sandbox logs is openshell logs; sandbox stop reports Stopped once the sandbox is stopped; policy example")
  func sandboxLogsAliasAndStop() throws {
    let gw = try RunningGateway("alias")
    defer { gw.stop() }
    let env = gw.env
    var r = try env.run(["sandbox", "create", "talk"])
    try #require(r.code == 0, "\(r)")
    var viaSandbox = ""
    for _ in 0..<50 {
      r = try env.run(["sandbox", "logs", "talk", "--source", "sandbox"])
      viaSandbox = r.out
      if r.out.contains("supervisor starting") { break }
      Thread.sleep(forTimeInterval: 0.2)
    }
    #expect(r.code == 0 && viaSandbox.contains("supervisor starting"), "\(r)")
    let badLevel = try env.run(["logs", "talk", "--level", "LOUD"])
    #expect(badLevel.code != 0 && badLevel.err.contains("--level must be one of DEBUG, INFO, WARN, ERROR (got 'LOUD')"), "\(badLevel)")
    let direct = try env.run(["logs", "talk", "--source", "sandbox"])
    #expect(direct.code == 0 && direct.out.contains("supervisor starting"), "\(direct)")
    r = try env.run(["sandbox", "stop", "talk"])
    #expect(r.code == 0 && r.out.contains("Stopped sandbox talk"), "\(r)")
    r = try env.run(["sandbox", "get", "talk", "-o", "json"])
    #expect((env.json(r)["phase"] as? String)?.lowercased() == "stopped", "\(r)")
    r = try env.run(["policy", "example"])
    #expect(r.code == 0 && r.out.hasPrefix("# OpenShell sandbox policy") && r.out.contains("network_policies:"), "\(r)")
  }

  @Test("sandbox create --env checks variable names before contacting a gateway")
  func envNames() throws {
    let env = try CLIEnv("envname")
    defer { env.cleanup() }
    for (arg, name) in [("A B=x", "A B"), ("1A=x", "1A"), ("A-B=x", "A-B"), ("A.B=", "A.B"), ("É=x", "É")] {
      // --no-bootstrap: were the name accepted, no gateway (and no sandbox) is started by this test.
      let r = try env.run(["sandbox", "create", "--no-bootstrap", "--env", "GOOD_1=ok", "--env", arg])
      #expect(r.code == 1, "\(arg): \(r)")
      #expect(r.err == "error: invalid --env name '\(name)': use letters, digits and '_', not starting with a digit\n", "\(arg): \(r)")
    }
    var r = try env.run(["sandbox", "create", "--no-bootstrap", "--env", "=x"])
    #expect(r.code == 1 && r.err == "error: --env expects KEY=VALUE, got '=x'\n", "\(r)")
    r = try env.run(["sandbox", "create", "--no-bootstrap", "--env", "A\nB=x"])
    #expect(r.code == 1 && r.err == "error: invalid --env name 'A\\nB': use letters, digits and '_', not starting with a digit\n", "\(r)")
    // A valid name gets as far as looking for a gateway.
    r = try env.run(["sandbox", "create", "--no-bootstrap", "--env", "_Ok9=1"])
    #expect(r.code == 1 && r.err.hasPrefix("error: no active gateway"), "\(r)")
    // A value that looks like a credential is warned about (names only, never the value), not refused.
    let value = "sk-warn-\(UUID().uuidString)"
    r = try env.run(["sandbox", "create", "--no-bootstrap", "--env", "MY_API_KEY=x1", "--env", "PLAIN=\(value)", "--env", "EDITOR=vi"])
    #expect(r.err.hasPrefix("warning: --env MY_API_KEY, PLAIN looks like a credential"), "\(r)")
    #expect(!r.err.contains(value) && !r.out.contains(value) && !r.err.contains("EDITOR"), "\(r)")
    #expect(r.code == 1 && r.err.contains("error: no active gateway"), "\(r)")
  }

  @Test("an explicitly empty gateway name (--name \"\", -g \"\") is an error, not the default gateway")
  func emptyGatewayName() throws {
    let env = try CLIEnv("noname")
    defer { env.cleanup() }
    let expected = "error: invalid gateway name '': \(Self.nameRule)\n"
    for args in [
      ["gateway", "info", "--name", ""], ["gateway", "stop", "--name", ""], ["gateway", "destroy", "--name", "", "--yes"],
      ["gateway", "start", "--name", ""], ["doctor", "logs", "--name", ""], ["doctor", "check", "--name", ""],
      ["status", "-g", ""], ["-g", "", "sandbox", "list"], ["gateway", "info", "--gateway", ""],
    ] {
      let r = try env.run(args)
      #expect(r.code == 1, "\(args): \(r)")
      #expect(r.err == expected, "\(args): \(r)")
      #expect(r.out.isEmpty, "\(args): \(r)")
    }
    // Nothing was started or registered.
    #expect(!FileManager.default.fileExists(atPath: env.config.appendingPathComponent("openshell/gateways").path))
    #expect(!FileManager.default.fileExists(atPath: env.state.appendingPathComponent("openshell/gateways").path))
    // A bad non-empty name is refused the same way; no name still means the default.
    var r = try env.run(["gateway", "stop", "--name", "a/b"])
    #expect(r.code == 1 && r.err == "error: invalid gateway name 'a/b': \(Self.nameRule)\n", "\(r)")
    r = try env.run(["gateway", "stop"])
    #expect(
      r.code == 1
        && r.err
          == "error: unknown gateway 'openshell' (no gateway is registered); to deploy a new gateway under that name: openshell gateway start --name openshell\n",
      "\(r)")
  }

  /// The value of `  Key:   value` in a record printed as a table.
  static func field(_ key: String, _ out: String) -> String? {
    for line in out.split(separator: "\n") {
      let t = line.trimmingCharacters(in: .whitespaces)
      if t.hasPrefix(key + ":") { return t.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces) }
    }
    return nil
  }

  func iso(_ d: Date) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    return f.string(from: d)
  }
}

/// A plaintext HTTP/2 "gateway" on 127.0.0.1 that resets every stream a client opens (RST_STREAM,
/// INTERNAL_ERROR), as a gateway that goes away in the middle of a call does.
final class ResettingHTTP2Server: @unchecked Sendable {
  let port: Int
  private let fd: Int32
  private let lock = NSLock()
  private var _resets = 0
  var resets: Int { lock.withLock { _resets } }

  init() throws {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    self.fd = fd
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var chosen = 0
    for _ in 0..<20 {
      let p = freePort()
      var a = sockaddr_in()
      a.sin_family = sa_family_t(AF_INET)
      a.sin_port = in_port_t(UInt16(p)).bigEndian
      a.sin_addr.s_addr = inet_addr("127.0.0.1")
      let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
      if rc == 0 { chosen = p; break }
    }
    guard chosen != 0, listen(fd, 16) == 0 else { throw POSIXError(.EADDRINUSE) }
    port = chosen
    let listener = fd
    Thread.detachNewThread { [self] in
      while true {
        let c = accept(listener, nil, nil)
        if c < 0 { if errno == EINTR { continue }; return }
        Thread.detachNewThread { [self] in serve(c) }
      }
    }
  }

  func close() {
    shutdown(fd, Int32(SHUT_RDWR))
    Glibc.close(fd)
  }

  private func serve(_ c: Int32) {
    defer { Glibc.close(c) }
    func readExactly(_ n: Int) -> [UInt8]? {
      var buf = [UInt8](repeating: 0, count: n)
      var got = 0
      while got < n {
        let k = buf.withUnsafeMutableBytes { read(c, $0.baseAddress! + got, n - got) }
        if k < 0 && errno == EINTR { continue }
        if k <= 0 { return nil }
        got += k
      }
      return buf
    }
    func send(_ type: UInt8, flags: UInt8, stream: UInt32, _ payload: [UInt8]) {
      let n = payload.count
      var frame: [UInt8] = [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags]
      frame += [UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)]
      frame += payload
      _ = frame.withUnsafeBytes { write(c, $0.baseAddress!, $0.count) }
    }
    guard readExactly(24) != nil else { return }  // the client connection preface
    send(0x4, flags: 0, stream: 0, [])  // SETTINGS
    while let header = readExactly(9) {
      let length = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
      let type = header[3]
      let flags = header[4]
      let stream = UInt32(header[5] & 0x7F) << 24 | UInt32(header[6]) << 16 | UInt32(header[7]) << 8 | UInt32(header[8])
      var payload: [UInt8] = []
      if length > 0 {
        guard let p = readExactly(length) else { return }
        payload = p
      }
      switch type {
      case 0x4 where flags & 0x1 == 0: send(0x4, flags: 0x1, stream: 0, [])  // SETTINGS → ACK
      case 0x6 where flags & 0x1 == 0: send(0x6, flags: 0x1, stream: 0, payload)  // PING → ACK
      case 0x1:  // HEADERS: reset the new stream
        send(0x3, flags: 0, stream: stream, [0, 0, 0, 2])
        lock.withLock { _resets += 1 }
      default: break
      }
    }
  }
}
