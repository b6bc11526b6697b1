import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import PolicyKit

typealias ShellClient = Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>

/// Shared plumbing of the `sandbox` and `logs` commands.
enum SandboxCLI {
  static func scope(_ workspace: String) -> Openshell_Datamodel_V1_WorkspaceSelector { .with { $0.workspace = workspace } }

  /// `last_sandbox` of a gateway (the sandbox used last; OpenShell keeps the same per gateway).
  static func lastSandboxFile(_ gateway: String) -> URL {
    ClientRegistry.default.gatewayDir(gateway).appendingPathComponent("last_sandbox")
  }

  static func remember(_ name: String, gateway: String) {
    let url = lastSandboxFile(gateway)
    try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try? Data((name + "\n").utf8).write(to: url)
  }

  static func forget(_ name: String, gateway: String) {
    if lastSandbox(gateway) == name { try? FileManager.default.removeItem(at: lastSandboxFile(gateway)) }
  }

  static func lastSandbox(_ gateway: String) -> String? {
    (try? String(contentsOf: lastSandboxFile(gateway), encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
      .nilIfEmpty
  }

  /// The sandbox name: the argument, else the gateway's last used sandbox.
  /// An explicitly empty name (e.g. an unset `$NAME` in a script) is an error, never the last used sandbox.
  static func name(_ given: String?, gateway: String) throws -> String {
    if let given {
      guard !given.isEmpty else { throw CLIError("the sandbox name is empty; give a name or leave it out to use the last used sandbox") }
      return given
    }
    guard let last = lastSandbox(gateway) else { throw CLIError("no sandbox name given and no last used sandbox for gateway '\(gateway)'") }
    return last
  }

  /// The cpu and memory limits of `spec.template.resources` (`{"cpu": "250m", "memory": "64Mi"}`, or the
  /// same under `limits`), in that order; nil when it sets none.
  static func limits(_ spec: Openshell_V1_SandboxSpec) -> [(key: String, value: String)]? {
    let fields = spec.template.resources.fields
    var out: [(key: String, value: String)] = []
    for key in ["cpu", "memory"] {
      var value = fields[key]
      if value == nil, case .structValue(let l)? = fields["limits"]?.kind { value = l.fields[key] }
      guard let v = value else { continue }
      switch v.kind {
      case .stringValue(let s)?: out.append((key, s))
      case .numberValue(let n)?: out.append((key, n == n.rounded() && abs(n) < 1e15 ? String(Int64(n)) : String(n)))
      default: continue
      }
    }
    return out.isEmpty ? nil : out
  }

  static func options(_ seconds: Int64 = 30) -> CallOptions {
    var o = CallOptions.defaults
    o.timeout = .seconds(seconds)
    o.waitForReady = false
    return o
  }

  /// Asks the gateway for sandbox `name` before anything is started over SSH (upload, download), so a
  /// missing or not running sandbox is one line and no ssh, tar or proxy process runs.
  /// - Throws: the gateway's NOT_FOUND (`sandbox WS/NAME not found`), or `CLIError` naming the phase
  ///   when the sandbox is not Ready.
  static func requireReady(_ r: GatewayOptions.Resolved, name: String, workspace: String) async throws {
    let s = try await GatewayClient.withClient(r.target) { c in
      try await c.getSandbox(
        .with {
          $0.name = name; $0.workspaceScope = scope(workspace)
        }, options: options()
      ).sandbox
    }
    guard s.status.phase == .ready else {
      throw CLIError("sandbox \(name) is \(phaseName(s.status.phase).lowercased()), not ready; nothing was copied")
    }
  }

  static func phaseName(_ p: Openshell_V1_SandboxPhase) -> String {
    switch p {
    case .provisioning: "Provisioning"
    case .ready: "Ready"
    case .error: "Error"
    case .deleting: "Deleting"
    case .stopping: "Stopping"
    case .stopped: "Stopped"
    case .starting: "Starting"
    case .completed: "Completed"
    case .unknown: "Unknown"
    default: "Unspecified"
    }
  }

  static func colored(_ p: Openshell_V1_SandboxPhase) -> String {
    let n = phaseName(p)
    switch p {
    case .ready: return Style.green(n)
    case .error: return Style.red(n)
    case .provisioning, .starting: return Style.yellow(n)
    case .deleting, .stopping, .stopped: return Style.dim(n)
    default: return n
    }
  }

  /// Runs ExecSandbox, streaming output to our stdout/stderr; returns the remote exit code.
  static func exec(_ c: ShellClient, name: String, workspace: String, command: [String], workdir: String?, timeout: Int64, stdin: Data) async throws -> Int32 {
    let request = Openshell_V1_ExecSandboxRequest.with {
      $0.sandbox = name
      $0.command = command
      $0.workdir = workdir ?? ""
      $0.stdin = stdin
      $0.workspaceScope = scope(workspace)
      if timeout > 0 { $0.executionTimeout = .init(seconds: timeout) }
    }
    var o = CallOptions.defaults
    o.waitForReady = false
    if timeout > 0 { o.timeout = .seconds(timeout + 10) }
    return try await c.execSandbox(request, options: o) { response in
      var code: Int32?
      for try await event in response.messages {
        switch event.payload {
        case .stdout(let d): FileHandle.standardOutput.write(d.data)
        case .stderr(let d): FileHandle.standardError.write(d.data)
        case .exit(let x): code = x.exitCode
        case nil: break
        }
      }
      guard let code else { throw CLIError("the exec stream ended without an exit status") }
      return code
    }
  }

  /// Reads piped stdin completely (at most 4 MiB); nothing when stdin is a terminal.
  static func pipedStdin() throws -> Data {
    guard isatty(0) == 0 else { return Data() }
    let data = FileHandle.standardInput.readDataToEndOfFile()
    guard data.count <= 4 << 20 else { throw CLIError("stdin is larger than 4 MiB") }
    return data
  }

  /// Polls until READY (printing phase changes); fails on ERROR/STOPPED or after `timeout`.
  /// Polls GetSandbox until the sandbox `id` is gone (NOT_FOUND, or the name now belongs to a newer
  /// sandbox), as the SDK does after an ACCEPTED deletion. Throws `CLIError` after `timeout` seconds.
  static func waitDeleted(_ c: ShellClient, name: String, id: String, workspace: String, timeout: Double) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
      do {
        let s = try await c.getSandbox(
          .with {
            $0.name = name; $0.workspaceScope = scope(workspace)
          }, options: options()
        ).sandbox
        if !id.isEmpty && s.metadata.id != id { return }
      } catch let e as RPCError where e.code == .notFound {
        return
      }
      try await Task.sleep(for: .milliseconds(100))
    }
    throw CLIError("sandbox \(name) is still being deleted after \(Int(timeout))s")
  }

  static func waitReady(_ c: ShellClient, name: String, workspace: String, timeout: Double, progress: Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    var last: Openshell_V1_SandboxPhase?
    while Date() < deadline {
      let s = try await c.getSandbox(
        .with {
          $0.name = name; $0.workspaceScope = scope(workspace)
        }, options: options()
      ).sandbox
      if s.status.phase != last, progress { printErr("  \(colored(s.status.phase))") }
      last = s.status.phase
      switch s.status.phase {
      case .ready: return
      case .error:
        let c = s.status.conditions.first { $0.type == "Ready" }
        throw CLIError("sandbox entered error phase while provisioning: \(c?.reason ?? "Error"): \(c?.message ?? "")")
      case .stopped: throw CLIError("sandbox \(name) is stopped")
      case .completed: throw CLIError("sandbox \(name) completed before it was ready: its main process exited with code 0")
      default: try await Task.sleep(for: .milliseconds(100))
      }
    }
    throw CLIError("sandbox \(name) did not become ready within \(String(format: "%g", timeout)) s (OPENSHELL_PROVISION_TIMEOUT)")
  }
}

extension String {
  var nilIfEmpty: String? { isEmpty ? nil : self }
}

/// Parses `K=V` pairs.
func keyValues(_ items: [String], flag: String) throws -> [String: String] {
  var out: [String: String] = [:]
  for item in items {
    guard let eq = item.firstIndex(of: "="), eq != item.startIndex else { throw ValidationError("\(flag) expects KEY=VALUE, got '\(item)'") }
    out[String(item[..<eq])] = String(item[item.index(after: eq)...])
  }
  return out
}

/// Parses `NAME=VALUE` environment variables; NAME must be a POSIX name (`[A-Za-z_][A-Za-z0-9_]*`).
func environmentVariables(_ items: [String], flag: String) throws -> [String: String] {
  let vars = try keyValues(items, flag: flag)
  for item in items {
    let name = String(item.prefix { $0 != "=" })
    if !isPOSIXName(name) {
      throw CLIError("invalid \(flag) name '\(PolicyYAML.escaped(name, limit: 60))': use letters, digits and '_', not starting with a digit")
    }
  }
  return vars
}

func isPOSIXName(_ s: String) -> Bool {
  guard let first = s.utf8.first, first == UInt8(ascii: "_") || isASCIILetter(first) else { return false }
  return s.utf8.allSatisfy { $0 == UInt8(ascii: "_") || isASCIILetter($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
}

private func isASCIILetter(_ b: UInt8) -> Bool {
  (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b)
}
