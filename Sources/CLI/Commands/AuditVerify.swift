import ArgumentParser
import Crypto
import Foundation
import LogTools
import OpenShellAPI

/// `openshell audit verify --public-key FILE`: the running gateway verifies its log (as
/// `openshell-replay verify`) and returns its signed checkpoints; this command checks every signature
/// against the caller's own copy of the checkpoint public key (threat model: LogTools/CheckpointSignature.swift).
/// Exit 0 only when the log verifies and at least one checkpoint by that key vouches for it.
struct AuditVerify: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "verify", abstract: "Verify the gateway's log and its signed checkpoints against your copy of the public key.")
  @OptionGroup var global: GatewayOptions
  @Option(
    help: ArgumentHelp(
      "The gateway's checkpoint public key (PEM; DATA/keys/audit-checkpoint.pub.pem on the gateway host — use a copy you kept).",
      valueName: "FILE")) var publicKey: String

  func run() async throws {
    try await cliRun {
      let key: Curve25519.Signing.PublicKey
      do { key = try CheckpointSignature.loadPublicKey(path: publicKey) } catch let e as CheckpointKeyError { throw CLIError(e.description) }
      let gateway = try global.resolve()
      var answer = Openshell_Audit_V1_VerifyLogResponse()
      try await AuditCLI.offlineOnFailure(gateway, replay: "verify", ["--public-key", publicKey]) {
        answer = try await AuditCLI.withAudit(gateway.target) { api in
          try await api.verifyLog(.init(), options: GatewayClient.options(timeout: .seconds(600)))
        }
      }
      guard answer.ok else {
        throw CLIError("FAILED: \(answer.firstBadSeq > 0 ? "seq \(answer.firstBadSeq): " : "")\(answer.problem)")
      }
      let entries = answer.checkpoints.map {
        CheckpointEntry(
          seq: $0.seq, coversSeq: $0.coversSeq, chainHash: [UInt8]($0.chainHash), signature: [UInt8]($0.signature),
          keySHA256: $0.keySha256, coveredHashNow: $0.coveredHashNow.isEmpty ? nil : [UInt8]($0.coveredHashNow))
      }
      let report = CheckpointVerifier.check(entries, key: key)
      if let problem = report.problem { throw CLIError("FAILED: \(problem)") }
      guard report.valid > 0 else {
        throw CLIError("FAILED: no checkpoint in the gateway's log is signed by \(publicKey) (\(report.otherKey) by other keys)")
      }
      // As replay verify: a head right after the newest covered record is that checkpoint itself.
      let head = answer.headSeq == report.coveredThrough + 1 ? " (record \(answer.headSeq) is that checkpoint itself)" : ""
      print("OK: head seq \(answer.headSeq); \(report.valid) checkpoint(s) signed by the key; records 1…\(report.coveredThrough) vouched for\(head)")
      // The gateway answering holds the log: a tail after its newest checkpoint is expected (as replay verify says).
      if let tail = report.unsignedTail(headSeq: answer.headSeq) { print(CheckpointReport.unsignedTailLine(tail)) }
    }
  }
}
