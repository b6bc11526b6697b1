import EventLog
import Foundation
import GRPCCore
import LogTools
import OpenShellAPI

extension AuditService {
  /// VerifyLog: the gateway runs `openshell-replay verify` on its own log (checksums, chain, every
  /// payload, the newest snapshot) and returns every signed checkpoint with the hash its covered record has
  /// now. The caller checks the signatures against its own copy of the public key: a checkpoint proves
  /// the records it covers only to someone who does not take the key from the gateway.
  public func verifyLog(request: Openshell_Audit_V1_VerifyLogRequest, context: ServerContext) async throws -> Openshell_Audit_V1_VerifyLogResponse {
    try Self.operatorOnly("VerifyLog")
    let result = try read { try LogVerifier.verify(log) }
    let checkpoints = try read { try CheckpointVerifier.collect(log) }
    return .with {
      $0.headSeq = result.headSeq
      $0.headHash = Data(log.headHash)
      $0.ok = result.ok
      $0.problem = result.problem ?? ""
      $0.firstBadSeq = result.firstBadSeq ?? 0
      $0.checkpoints = checkpoints.map { c in
        .with {
          $0.seq = c.seq
          $0.coversSeq = c.coversSeq
          $0.chainHash = Data(c.chainHash)
          $0.signature = Data(c.signature)
          $0.keySha256 = c.keySHA256
          if let now = c.coveredHashNow { $0.coveredHashNow = Data(now) }
        }
      }
    }
  }
}
