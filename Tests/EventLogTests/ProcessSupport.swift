import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Finds the built `openshell-log-stress` executable: `$OPENSHELL_LOG_STRESS`, else next to the test
/// runner binary (SwiftPM puts all products of a build in one directory).
func locateStressBinary() -> String? {
  let fm = FileManager.default
  if let p = ProcessInfo.processInfo.environment["OPENSHELL_LOG_STRESS"], fm.isExecutableFile(atPath: p) {
    return p
  }
  var dirs: [String] = []
  if let exe = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
    dirs.append((exe as NSString).deletingLastPathComponent)
  }
  if let u = Bundle.main.executableURL { dirs.append(u.deletingLastPathComponent().path) }
  if let a0 = CommandLine.arguments.first { dirs.append((a0 as NSString).deletingLastPathComponent) }
  dirs.append(Bundle.main.bundlePath)
  for d in dirs {
    var dir = d
    // The runner may live inside an .xctest bundle directory on some platforms; walk up a few levels.
    for _ in 0..<4 {
      let candidate = dir + "/openshell-log-stress"
      if fm.isExecutableFile(atPath: candidate) { return candidate }
      dir = (dir as NSString).deletingLastPathComponent
    }
  }
  return nil
}

/// A running `openshell-log-stress` child with its stdout collected on a background thread.
final class StressProcess: @unchecked Sendable {
  let process = Process()
  private let output = Mutex<[UInt8]>([])
  private let done = Mutex<Bool>(false)
  private let pipe = Pipe()

  init(binary: String, arguments: [String], stderrPath: String) throws {
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = arguments
    process.standardOutput = pipe
    _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
    process.standardError = FileHandle(forWritingAtPath: stderrPath)
    try process.run()
    let handle = pipe.fileHandleForReading
    let t = Thread { [self] in
      while true {
        let d = handle.availableData
        if d.isEmpty { break }
        output.withLock { $0 += Array(d) }
      }
      done.withLock { $0 = true }
    }
    t.start()
  }

  var pid: Int32 { process.processIdentifier }

  /// Complete lines so far (a line counts only with its newline).
  var lines: [String] {
    let bytes = output.withLock { $0 }
    guard let lastNL = bytes.lastIndex(of: UInt8(ascii: "\n")) else { return [] }
    return String(decoding: bytes[...lastNL], as: UTF8.self).split(separator: "\n").map(String.init)
  }

  /// Waits (polling) until `predicate(lines)` holds or `timeout` seconds pass.
  func wait(timeout: Double, until predicate: ([String]) -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
      if predicate(lines) { return true }
      if !process.isRunning && done.withLock({ $0 }) { return predicate(lines) }
      usleep(2_000)
    }
    return predicate(lines)
  }

  /// SIGKILLs the child and waits for it and for EOF on its stdout.
  func kill9() {
    if process.isRunning { kill(pid, SIGKILL) }
    process.waitUntilExit()
    let deadline = Date().addingTimeInterval(5)
    while !done.withLock({ $0 }) && Date() < deadline { usleep(1_000) }
  }
}

/// Parses `ACK <seq> <payload>` lines.
func parseAcks(_ lines: [String]) -> [(seq: UInt64, payload: String)] {
  lines.compactMap { line in
    let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count == 3, parts[0] == "ACK", let seq = UInt64(parts[1]) else { return nil }
    return (seq, String(parts[2]))
  }
}

/// Runs a command, returning its exit status and combined output.
@discardableResult
func runCommand(_ path: String, _ args: [String]) -> (status: Int32, output: String) {
  let p = Process()
  p.executableURL = URL(fileURLWithPath: path)
  p.arguments = args
  let pipe = Pipe()
  p.standardOutput = pipe
  p.standardError = pipe
  do { try p.run() } catch { return (-1, "\(error)") }
  let data = pipe.fileHandleForReading.readDataToEndOfFile()
  p.waitUntilExit()
  return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}
