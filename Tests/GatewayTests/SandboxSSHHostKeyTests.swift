import Foundation
import Testing

@testable import Gateway

/// The sandbox SSH host key made in-process (`OpenSSHEd25519Key`) is what OpenSSH itself reads: Debian's
/// `ssh-keygen` derives the same public key from the private file and prints the same fingerprint the
/// gateway hands to clients. (The sandbox's sshd loading it is covered by the SSH suites.)
@Suite("Sandbox SSH host key files")
struct SandboxSSHHostKeyTests {
  static let keygen = "/usr/bin/ssh-keygen"

  static func runKeygen(_ args: [String]) async throws -> (code: Int32, out: String) {
    let r = try await GatewayTestSupport.run(keygen, args)
    return (r.status, r.stdout + r.stderr)
  }

  @Test(
    "ssh-keygen reads the private key, derives the .pub line and prints the gateway's fingerprint",
    .enabled(if: FileManager.default.isExecutableFile(atPath: keygen)))
  func opensshReadsTheFiles() async throws {
    let dir = try GatewayTestSupport.temporaryDirectory("hostkey")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var seen = Set<String>()
    for round in 0..<5 {  // several keys: the padding length and the check integers vary
      let comment = "openshell-sandbox-\(round)-\(UUID().uuidString.lowercased())"
      try await SandboxSSHHostKey.generate(in: dir, comment: comment, owner: nil)
      let key = dir + "/" + SandboxSSHHostKey.privateName
      let pub = try String(contentsOfFile: key + ".pub", encoding: .utf8)
      #expect(pub.hasPrefix("ssh-ed25519 ") && pub.hasSuffix(" \(comment)\n"), "\(pub)")
      let derived = try await Self.runKeygen(["-y", "-f", key])
      #expect(derived.code == 0, "\(derived.out)")
      // `-y` prints "ssh-ed25519 BASE64 comment" (the comment from the private file).
      #expect(derived.out == pub, "derived \(derived.out) vs written \(pub)")
      let listed = try await Self.runKeygen(["-l", "-E", "sha256", "-f", key])
      #expect(listed.code == 0, "\(listed.out)")
      let ours = try #require(SandboxSSHHostKey.fingerprint(in: dir))
      #expect(listed.out.split(separator: " ").dropFirst().first.map(String.init) == ours, "\(listed.out) vs \(ours)")
      var st = stat()
      #expect(stat(key, &st) == 0 && st.st_mode & 0o777 == 0o600)
      #expect(stat(key + ".pub", &st) == 0 && st.st_mode & 0o777 == 0o644)
      seen.insert(ours)
    }
    #expect(seen.count == 5, "every start gets a new key")
  }

  @Test("a changed byte in the private file is refused by ssh-keygen (the test can fail)", .enabled(if: FileManager.default.isExecutableFile(atPath: keygen)))
  func damagedFileIsRefused() async throws {
    let dir = try GatewayTestSupport.temporaryDirectory("hostkey")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try await SandboxSSHHostKey.generate(in: dir, comment: "c", owner: nil)
    let key = dir + "/" + SandboxSSHHostKey.privateName
    var text = try String(contentsOfFile: key, encoding: .utf8)
    // The first base64 line encodes the "openssh-key-v1" magic: break it.
    let start = try #require(text.range(of: "-----\n")?.upperBound)
    text.replaceSubrange(start..<text.index(start, offsetBy: 4), with: "AAAA")
    try text.write(toFile: key, atomically: false, encoding: .utf8)
    #expect(try await Self.runKeygen(["-y", "-f", key]).code != 0)
  }
}
