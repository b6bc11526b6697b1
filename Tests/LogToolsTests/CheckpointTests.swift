import Crypto
import EventLog
import Foundation
import LogTools
import Projections
import Scenarios
import Testing

/// Signed checkpoints (issue 12): a rewritten chain passes the plain chain check but not the signature.
@Suite struct CheckpointTests {
  /// A writable copy of a fixture log with one signed checkpoint of its head appended, plus the key.
  func signedLog() async throws -> (dir: String, key: Curve25519.Signing.PrivateKey, coveredSeq: UInt64) {
    let dir = try fixtureCopy(Scenarios.all[0].name)
    let log = try EventLog.open(directory: dir)
    defer { log.close() }
    let key = Curve25519.Signing.PrivateKey()
    let head = log.headSeq
    let record = try #require(try log.record(at: head))
    let checkpoint = try CheckpointSignature.checkpoint(seq: head, chainHash: record.hash, key: key)
    _ = try await log.append([checkpoint.newEvent(actor: "system", requestID: "")])
    return (dir, key, head)
  }

  @Test func aSignedLogVerifiesWithItsKeyOnly() async throws {
    let (dir, key, covered) = try await signedLog()
    let log = try openReadOnly(dir)
    defer { log.close() }
    let report = try CheckpointVerifier.verify(log, key: key.publicKey)
    #expect(report.ok)
    #expect(report.valid == 1)
    #expect(report.coveredThrough == covered)

    let stranger = try CheckpointVerifier.verify(log, key: Curve25519.Signing.PrivateKey().publicKey)
    #expect(!stranger.ok, "a checkpoint by another key vouches for nothing")
    #expect(stranger.valid == 0 && stranger.otherKey == 1)
    #expect(stranger.otherKeyCoversThrough == covered, "the records another key vouches for are named (a restored gateway's own key)")
    #expect(report.otherKeyCoversThrough == 0)
  }

  /// The attacker rewrites the whole chain with one edited event and valid checksums and hashes,
  /// copying the checkpoint record verbatim: the plain verify passes, the signed check names the range.
  @Test func aRewrittenChainIsDetected() async throws {
    let (dir, key, covered) = try await signedLog()
    let original = try openReadOnly(dir)
    defer { original.close() }
    let forged = temporaryDirectory("forged")
    let out = try EventLog.open(directory: forged)
    var edited = false
    for r in try original.records(from: 1) {
      var payload = r.payload
      if !edited, r.type == "sandbox.requested", var event = try? GatewayEvent.decode(r),
        case .sandboxRequested(var e)? = event.kind
      {
        e.name = "rewritten-" + e.name
        event.kind = .sandboxRequested(e)
        payload = try event.serializedBytes()
        edited = true
      }
      let new = NewEvent(
        type: r.type, aggregate: r.aggregate, actor: r.actor, requestID: r.requestID,
        payloadVersion: r.payloadVersion, payload: payload, timestampNs: r.timestampNs)
      _ = try await out.append([new])
    }
    out.close()
    #expect(edited, "the fixture must contain a sandbox.requested event to edit")

    let log = try openReadOnly(forged)
    defer { log.close() }
    let plain = try LogVerifier.verify(log)
    #expect(plain.firstBadSeq == nil, "the rewritten chain is internally consistent: \(plain.problem ?? "")")
    let report = try CheckpointVerifier.verify(log, key: key.publicKey)
    #expect(!report.ok)
    #expect(report.problem?.contains("records 1…\(covered) were rewritten") == true, "\(report.problem ?? "nil")")
    #expect(report.badCheckpointSeq == covered + 1)
  }

  @Test func anAlteredSignatureIsForged() async throws {
    let (dir, key, covered) = try await signedLog()
    let original = try openReadOnly(dir)
    defer { original.close() }
    let forged = temporaryDirectory("forged-sig")
    let out = try EventLog.open(directory: forged)
    for r in try original.records(from: 1) {
      var payload = r.payload
      if r.type == "audit.checkpoint", var event = try? GatewayEvent.decode(r), case .auditCheckpoint(var c)? = event.kind {
        var sig = [UInt8](c.signature)
        sig[0] ^= 1
        c.signature = Data(sig)
        event.kind = .auditCheckpoint(c)
        payload = try event.serializedBytes()
      }
      _ = try await out.append([
        NewEvent(
          type: r.type, aggregate: r.aggregate, actor: r.actor, requestID: r.requestID,
          payloadVersion: r.payloadVersion, payload: payload, timestampNs: r.timestampNs)
      ])
    }
    out.close()
    let log = try openReadOnly(forged)
    defer { log.close() }
    let report = try CheckpointVerifier.verify(log, key: key.publicKey)
    #expect(report.problem?.contains("invalid signature") == true)
    #expect(report.badCheckpointSeq == covered + 1)
  }

  /// The public key file is standard PEM and the signature standard Ed25519: OpenSSL verifies it.
  @Test func openSSLVerifiesTheSignatureWithThePEMKey() throws {
    let key = Curve25519.Signing.PrivateKey()
    let dir = temporaryDirectory("pem")
    let pem = try CheckpointSignature.pem(key.publicKey)
    try pem.write(toFile: dir + "/pub.pem", atomically: true, encoding: .utf8)
    #expect(try CheckpointSignature.loadPublicKey(path: dir + "/pub.pem").rawRepresentation == key.publicKey.rawRepresentation)
    let message = CheckpointSignature.message(seq: 42, chainHash: [UInt8](repeating: 7, count: 32))
    try Data(message).write(to: URL(fileURLWithPath: dir + "/msg"))
    try Data(try key.signature(for: message)).write(to: URL(fileURLWithPath: dir + "/sig"))
    let openssl = Process()
    openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    openssl.arguments = ["pkeyutl", "-verify", "-pubin", "-inkey", dir + "/pub.pem", "-rawin", "-in", dir + "/msg", "-sigfile", dir + "/sig"]
    openssl.standardOutput = FileHandle.nullDevice
    openssl.standardError = FileHandle.nullDevice
    try openssl.run()
    openssl.waitUntilExit()
    #expect(openssl.terminationStatus == 0, "openssl pkeyutl -verify must accept the signature")
    #expect(throws: CheckpointKeyError.self) { try CheckpointSignature.loadPublicKey(path: dir + "/msg") }
  }
}
