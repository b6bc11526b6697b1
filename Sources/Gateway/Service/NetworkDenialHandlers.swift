import Foundation
import GRPCCore
import OpenShellAPI
import Projections

extension OpenShellService {
  /// Most entries one report may carry, and the longest string kept per field.
  static let maxDenialEntries = 200
  static let maxDenialField = 512

  /// `SubmitPolicyAnalysis` from a sandbox supervisor: its aggregated network denials
  /// (`summaries`, OpenShell's `DenialSummary`; wire-contract.md) become one durable
  /// `sandbox.network_denials` event, so that `openshell-replay audit --sandbox NAME` shows what the
  /// sandbox's proxy blocked. The supervisor flushes at most once per 10 s (enforcement-and-ssh.md §1.4,
  /// row "Denials → proposals"). Proposed chunks (the draft-rule flow) are not supported yet and are
  /// reported back as rejected.
  ///
  /// Errors: PERMISSION_DENIED for callers that are not the sandbox's supervisor; NOT_FOUND for an
  /// unknown sandbox; INVALID_ARGUMENT for an empty report or one with more than 200 summaries.
  public func submitPolicyAnalysis(request: Openshell_V1_SubmitPolicyAnalysisRequest, context: ServerContext) async throws
    -> Openshell_V1_SubmitPolicyAnalysisResponse
  {
    let claimed = request.summaries.first?.sandboxID ?? ""
    let id = try sandboxCaller("SubmitPolicyAnalysis", claimed: claimed)
    guard request.summaries.allSatisfy({ $0.sandboxID.isEmpty || $0.sandboxID == id }) else {
      throw RPCErrors.permissionDenied("sandbox \(id) may only report its own denials")
    }
    guard !request.summaries.isEmpty || !request.proposedChunks.isEmpty else {
      throw RPCErrors.invalidArgument(field: "summaries", "the report contains no summaries")
    }
    guard request.summaries.count <= Self.maxDenialEntries else {
      throw RPCErrors.invalidArgument(field: "summaries", "at most \(Self.maxDenialEntries) summaries per report, got \(request.summaries.count)")
    }
    func clip(_ s: String) -> String { s.count > Self.maxDenialField ? String(s.prefix(Self.maxDenialField)) + "…" : s }
    let event = Openshell_Events_V1_SandboxNetworkDenials.with { e in
      e.id = id
      let firsts = request.summaries.filter(\.hasFirstSeenTime).map { Int64($0.firstSeenTime.date.timeIntervalSince1970 * 1e9) }
      let lasts = request.summaries.filter(\.hasLastSeenTime).map { Int64($0.lastSeenTime.date.timeIntervalSince1970 * 1e9) }
      e.firstSeenNs = firsts.min() ?? 0
      e.lastSeenNs = lasts.max() ?? 0
      e.denials = request.summaries.map { s in
        .with {
          $0.host = clip(s.host)
          $0.port = min(s.port, 65535)
          $0.binary = clip(s.binary)
          $0.binarySha256 = clip(s.binarySha256)
          $0.reason = clip(s.denyReason)
          $0.count = max(s.count, 1)
        }
      }
    }
    let actor = CallerIdentity.current.sandboxID != nil ? CallerIdentity.current.actor : "sandbox:\(id)"
    if !event.denials.isEmpty {
      try await store.execute(actor: actor, requestID: "") { state in
        guard state.sandboxes[id] != nil else { throw RPCErrors.notFound("sandbox \(id)") }
        return Decision(events: [GatewayEvent(.sandboxNetworkDenials(event))])
      }
    }
    return .with {
      $0.acceptedChunks = 0
      $0.rejectedChunks = UInt32(request.proposedChunks.count)
      if !request.proposedChunks.isEmpty { $0.rejectionReasons = ["policy proposals are not supported by this gateway yet"] }
    }
  }
}
