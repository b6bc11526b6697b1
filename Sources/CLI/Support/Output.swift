import ArgumentParser
import Foundation
import GRPCCore
import Gateway
import NIOCore
import NIOPosix
import NIOSSL
import Yams

#if canImport(Glibc)
  import Glibc
#endif

/// A CLI failure: printed as one line `error: <message>` on stderr, exit code `code` (never 0).
struct CLIError: Error, CustomStringConvertible {
  var message: String
  var code: Int32 = 1
  init(_ message: String, code: Int32 = 1) {
    self.message = message
    self.code = code
  }
  var description: String { message }
}

/// Runs a command body, turning every error into one readable line and a non-zero exit code.
func cliRun(_ body: () async throws -> Void) async throws {
  do {
    try await body()
  } catch let e as CLIError {
    throw fail(e.message, code: e.code)
  } catch let e as ExitCode {
    throw e
  } catch let e as ValidationError {
    throw fail(e.message)
  } catch let e as CleanExit {
    throw e
  } catch let e as RPCError {
    throw fail(describe(e))
  } catch {
    throw fail(fileErrorText(error) ?? oneLine("\(error)"))
  }
}

/// One line for an RPC error. A failed connection names the gateway and says what to try instead of
/// printing grpc-swift's transport error (`unavailable: "Could not establish a connection…" (cause: …)`).
func describe(_ e: RPCError) -> String {
  if !fromGateway(e), let tls = tlsFailure(transportCauses(e)) {
    guard let g = ResolvedGateway.last, g.name != g.endpoint else { return "cannot trust the gateway: \(tls)" }
    return "cannot trust gateway '\(g.name)' at \(g.endpoint): \(tls)"
  }
  if let reason = connectionFailure(e) {
    guard let g = ResolvedGateway.last else { return "cannot reach the gateway: \(reason)" }
    let hint =
      g.type == "local"
      ? (LocalGateway.startCommand(registration: g.name).map { "is it running? start it with: \($0)" } ?? "is the gateway behind it running?")
      : ClientRegistry.default.metadata(g.name)?.ssh.map { "is it running on \($0.destination)? start it with: openshell gateway start --name \(g.name)" }
        ?? "check the endpoint and your network (openshell gateway info --name \(g.name))"
    if g.name == g.endpoint { return "cannot reach the gateway at \(g.endpoint): \(reason)" }
    return "cannot reach gateway '\(g.name)' at \(g.endpoint): \(reason); \(hint)"
  }
  if streamClosed(e) {
    guard let g = ResolvedGateway.last else { return "the connection to the gateway closed (was it stopped?)" }
    if g.name == g.endpoint { return "the connection to the gateway at \(g.endpoint) closed (was it stopped?)" }
    return "the connection to gateway '\(g.name)' closed (was it stopped?)"
  }
  // A gateway's answer: its message is written for people; the status code name adds nothing.
  let message = oneLine(e.message)
  return message.isEmpty ? "the gateway answered \(e.code) without a message" : message
}

/// Whether a status came from a gateway: every status the gateway sends carries a `google.rpc.ErrorInfo`
/// in its domain (``ErrorFunnel``); one without came from this client's transport.
func fromGateway(_ e: RPCError) -> Bool { e.gatewayReason != nil }

/// Whether the call's stream was reset or closed under it (the gateway stopped or restarted mid-call):
/// UNAVAILABLE made up by the transport without an underlying connection error.
func streamClosed(_ e: RPCError) -> Bool {
  e.code == .unavailable && !fromGateway(e) && transportCauses(e).isEmpty
}

/// The reason a call never reached a gateway (connection refused, unknown host, timeout), or nil when
/// the error came from a gateway. Decided on the status code and the types of the transport's
/// underlying errors (`IOError`'s errno, `NIOConnectionError`, `ChannelError`, NIOSSL's errors).
func connectionFailure(_ e: RPCError) -> String? {
  guard e.code == .unavailable || e.code == .deadlineExceeded, !fromGateway(e) else { return nil }
  let causes = transportCauses(e)
  guard !causes.isEmpty else { return nil }
  if let tls = tlsFailure(causes) { return tls }
  for cause in causes {
    if let io = cause as? IOError {
      switch io.errnoCode {
      case ECONNREFUSED: return "connection refused"
      case ETIMEDOUT: return "connection timed out"
      case EHOSTUNREACH, ENETUNREACH: return "no route to the host"
      default: continue
      }
    }
    if let c = cause as? NIOConnectionError, c.connectionErrors.isEmpty, c.dnsAError != nil || c.dnsAAAAError != nil {
      return "host name not found"
    }
    if cause is SocketAddressError { return "host name not found" }
    if let c = cause as? ChannelError, case .connectTimeout = c { return "connection timed out" }
  }
  return "no connection (\(oneLine("\(causes.last!)")))"
}

/// The errors under a transport-made status: its cause, that cause's cause, and the per-address
/// failures of a `NIOConnectionError`, outermost first.
func transportCauses(_ e: RPCError) -> [any Error] {
  var out: [any Error] = []
  var next = e.cause
  while let cause = next, out.count < 16 {
    out.append(cause)
    if let c = cause as? NIOConnectionError {
      out += c.connectionErrors.map(\.error) + [c.dnsAError, c.dnsAAAAError].compactMap { $0 }
    }
    next = (cause as? RPCError)?.cause
  }
  return out
}

/// A failed TLS verification among a transport's errors: a host name mismatch is NIOSSL's typed
/// `failedToValidateHostname`; a chain BoringSSL refused is a `handshakeFailed` whose BoringSSL reason is
/// exposed only in its description (NIOSSL keeps the numeric code private).
func tlsFailure(_ causes: [any Error]) -> String? {
  for cause in causes {
    if let x = cause as? NIOSSLExtraError, x == .failedToValidateHostname { return tlsFailure("failedToValidateHostname") }
    if let x = cause as? NIOSSLError, case .handshakeFailed = x, let tls = tlsFailure("\(x)") { return tls }
  }
  return nil
}

/// A failed TLS verification of the gateway, in words (grpc-swift reports it only as text in the cause).
func tlsFailure(_ text: String) -> String? {
  if text.contains("failedToValidateHostname") {
    return "the gateway's certificate is not issued for this host or address (`openshell gateway start --gateway-host H` adds a name to it)"
  }
  if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("certificate verify failed") {
    return
      "the gateway's certificate is not signed by a CA this registration trusts (the CA stored for it, or for a new one the system's roots: pass --ca-file with the CA that signed it)"
  }
  return nil
}

/// Collapses a multi-line description to one line.
func oneLine(_ s: String) -> String {
  s.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
}

/// Terminal styling: colours only when stdout is a terminal and `NO_COLOR` is unset.
enum Style {
  static let enabled: Bool = {
    let env = ProcessInfo.processInfo.environment
    if let v = env["NO_COLOR"], !v.isEmpty { return false }
    if env["TERM"] == "dumb" { return false }
    return isatty(STDOUT_FILENO) == 1
  }()

  static func paint(_ s: String, _ code: String) -> String { enabled ? "\u{1B}[\(code)m\(s)\u{1B}[0m" : s }
  static func green(_ s: String) -> String { paint(s, "32") }
  static func red(_ s: String) -> String { paint(s, "31") }
  static func yellow(_ s: String) -> String { paint(s, "33") }
  static func bold(_ s: String) -> String { paint(s, "1") }
  static func dim(_ s: String) -> String { paint(s, "2") }
  static var check: String { green("✓") }
}

var stdinIsTerminal: Bool { isatty(STDIN_FILENO) == 1 }
var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) == 1 }

func printErr(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

/// `-o table|json|yaml` for commands whose output is data.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
  case table, json, yaml
}

struct OutputOptions: ParsableArguments {
  @Option(name: [.short, .customLong("output")], help: "Output format: table, json or yaml.")
  var output: OutputFormat = .table
}

/// An ordered list of key/value pairs, rendered as aligned text, JSON or YAML.
struct Record {
  var pairs: [(String, Any?)]

  func render(_ format: OutputFormat, title: String? = nil) throws -> String {
    switch format {
    case .table:
      let width = (pairs.map { $0.0.count }.max() ?? 0) + 1
      var lines: [String] = []
      if let title { lines.append(Style.bold(title)) }
      for (k, v) in pairs where v != nil {
        lines.append("  " + (k + ":").padding(toLength: width + 1, withPad: " ", startingAt: 0) + describe(v!))
      }
      return lines.joined(separator: "\n")
    case .json:
      return try jsonString(dictionary())
    case .yaml:
      return try Yams.dump(object: dictionary(), sortKeys: false).trimmingCharacters(in: .newlines)
    }
  }

  func dictionary() -> [String: Any] {
    var d: [String: Any] = [:]
    for (k, v) in pairs { if let v { d[key(k)] = v } }
    return d
  }

  private func key(_ k: String) -> String { k.lowercased().replacingOccurrences(of: " ", with: "_") }
  private func describe(_ v: Any) -> String {
    if let b = v as? Bool { return b ? "yes" : "no" }
    return "\(v)"
  }
}

func jsonString(_ object: Any) throws -> String {
  let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
  return String(decoding: data, as: UTF8.self)
}

/// Renders rows as an aligned table with a header.
func renderTable(header: [String], rows: [[String]]) -> String {
  var widths = header.map(\.count)
  for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
  func line(_ cells: [String]) -> String {
    var s = cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
      .joined(separator: "  ")
    while s.hasSuffix(" ") { s.removeLast() }  // an empty last cell
    return s
  }
  return ([Style.bold(line(header))] + rows.map(line)).joined(separator: "\n")
}

/// UTC timestamp for archive directory names: `20260130T041500Z`.
func utcStamp(_ date: Date = Date()) -> String {
  let f = DateFormatter()
  f.locale = Locale(identifier: "en_US_POSIX")
  f.timeZone = TimeZone(identifier: "UTC")
  f.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
  return f.string(from: date)
}

/// UTC time for tables: `2026-01-30 04:15:00`.
func utcDateTime(_ date: Date) -> String {
  let f = DateFormatter()
  f.locale = Locale(identifier: "en_US_POSIX")
  f.timeZone = TimeZone(identifier: "UTC")
  f.dateFormat = "yyyy-MM-dd HH:mm:ss"
  return f.string(from: date)
}

func iso8601(_ date: Date) -> String {
  let f = ISO8601DateFormatter()
  f.formatOptions = [.withInternetDateTime]
  return f.string(from: date)
}
