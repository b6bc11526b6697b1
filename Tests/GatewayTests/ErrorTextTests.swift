import Foundation
import SandboxProtocol
import Testing

@testable import Gateway

/// ``errorLine(_:limit:)``: what a failed sandbox start reports (`SupervisorStartFailed`) is one readable line,
/// never a Foundation `NSError` dump.
@Suite struct ErrorTextTests {
  @Test func foundationFileErrorsReadAsOperationPathAndReason() throws {
    let dir = try GatewayTestSupport.temporaryDirectory("errtext")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let file = dir + "/file"
    try #require(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))

    // A directory below a regular file (a sandbox directory whose parent was replaced by a file).
    let mkdirError = #expect(throws: (any Error).self) {
      try FileManager.default.createDirectory(atPath: file + "/sub", withIntermediateDirectories: true)
    }
    let made = try #require(mkdirError)
    #expect("\(made)".contains("NSCocoaErrorDomain"), "precondition: Foundation's own text is the dump: \(made)")
    #expect(errorLine(made) == "cannot write \(file)/sub: Not a directory", "\(made)")

    // A file that is not there, read.
    let readError = #expect(throws: (any Error).self) { _ = try Data(contentsOf: URL(fileURLWithPath: dir + "/missing")) }
    #expect(errorLine(try #require(readError)) == "cannot read \(dir)/missing: No such file or directory")

    // A file written where no directory is (Foundation's generic "no such file" code: no operation to name).
    let writeError = #expect(throws: (any Error).self) { try Data("x".utf8).write(to: URL(fileURLWithPath: dir + "/absent/out")) }
    let written = try #require(writeError)
    #expect(errorLine(written) == "cannot access \(dir)/absent/out: No such file or directory", "\(written)")

    for line in [errorLine(made), errorLine(try #require(readError)), errorLine(try #require(writeError))] {
      #expect(!line.contains("\n") && !line.contains("Domain=") && !line.contains("UserInfo"), "\(line)")
    }
  }

  @Test func otherErrorsAreOneBoundedLine() {
    #expect(errorLine(POSIXError(.EACCES)) == "Permission denied")
    #expect(errorLine(SpawnError("cannot start /usr/bin/bwrap:\n  Permission denied\n")) == "cannot start /usr/bin/bwrap: Permission denied")
    let long = errorLine(SpawnError(String(repeating: "x", count: 1000)), limit: 300)
    #expect(long.count == 300 && long.hasSuffix("…") && long.hasPrefix("xxx"))
    #expect(errorLine(SpawnError("short"), limit: 300) == "short")
  }
}
