import Foundation
import Subprocess
import SystemPackage

/// Runs a program to completion with swift-subprocess (the CLI's own short-lived children: `doctor exec`,
/// `openshell-replay restore`, the bootstrap `gateway start`). Not for the gateway daemon, which must
/// outlive the CLI in its own session with its descriptors set up by hand (``ProcessTable``), nor for the
/// browser opened by `gateway login`, which is not waited for (docs/DESIGN.md, "Child processes and process lifecycle").
enum ChildProcess {
  /// Where the child's standard output goes.
  enum Stdout { case inherit, toStandardError }

  /// Runs `path` with `arguments`, this process's stdin and stderr, and waits for it.
  /// - Parameters:
  ///   - environment: the child's whole environment (nil: this process's).
  ///   - workingDirectory: nil: this process's.
  /// - Returns: the exit code, or 128 + N for a child ended by signal N (as a shell reports it).
  /// - Throws: `CLIError` naming the program when it cannot be started.
  static func run(
    _ path: String, _ arguments: [String], environment: [String: String]? = nil, workingDirectory: String? = nil,
    stdout: Stdout = .inherit
  ) async throws -> Int32 {
    var env = Environment.inherit
    if let environment {
      env = .custom(Dictionary(environment.compactMap { k, v in Environment.Key(rawValue: k).map { ($0, v) } }, uniquingKeysWith: { _, new in new }))
    }
    let directory = workingDirectory.map { FilePath($0) }
    let status: TerminationStatus
    do {
      switch stdout {
      case .inherit:
        status = try await Subprocess.run(
          .path(FilePath(path)), arguments: Arguments(arguments), environment: env, workingDirectory: directory,
          input: .currentStandardInput, output: .currentStandardOutput, error: .currentStandardError
        ).terminationStatus
      case .toStandardError:
        status = try await Subprocess.run(
          .path(FilePath(path)), arguments: Arguments(arguments), environment: env, workingDirectory: directory,
          input: .currentStandardInput, output: .fileDescriptor(.standardError, closeAfterSpawningProcess: false),
          error: .currentStandardError
        ).terminationStatus
      }
    } catch {
      throw CLIError("cannot run \(path): \(error)")
    }
    switch status {
    case .exited(let code): return code
    case .signaled(let signal): return 128 + signal
    }
  }
}
