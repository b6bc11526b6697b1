import Foundation
import GRPCCore
import OpenShellAPI
import Projections

/// `openshell.audit.v1.SandboxAuditReports` (Protos/audit.proto): reports from sandbox supervisors that
/// become audit records. A service of its own beside the operator-only `AuditService`; its one RPC is
/// authorised like `SubmitPolicyAnalysis` (a sandbox's own identity, for itself only), by the
/// ``OpenShellService`` it delegates to.
public struct SandboxAuditReportsService: Openshell_Audit_V1_SandboxAuditReports.SimpleServiceProtocol, Sendable {
  let service: OpenShellService

  /// The service answering with `service`'s authorization and event store.
  public init(service: OpenShellService) { self.service = service }

  /// `ReportCredentialSubstitutions` RPC: a sandbox supervisor's summary of placeholder substitutions, recorded
  /// as one `audit.credentials_substituted` event. Callers: the sandbox itself only. Answers an empty response.
  public func reportCredentialSubstitutions(request: Openshell_Audit_V1_ReportCredentialSubstitutionsRequest, context: ServerContext) async throws
    -> Openshell_Audit_V1_ReportCredentialSubstitutionsResponse
  {
    try await service.reportCredentialSubstitutions(request)
    return .init()
  }
}

extension OpenShellService {
  /// Most entries one report may carry (the supervisor itemises at most this many per flush).
  static let maxSubstitutionEntries = 500

  /// `ReportCredentialSubstitutions` from a sandbox supervisor: the credential placeholders its policy proxy
  /// replaced with values (issue 12, credential disclosure: "every placeholder substitution summary from
  /// the proxy"), aggregated per (key, host, port, binary) with counts, become one durable
  /// `audit.credentials_substituted` event naming, for each key, the attached provider that holds it
  /// (resolved here in the order the sandbox's environment is merged; "" when none does any more). Key
  /// names and counts only: the report carries no value and none is recorded. The supervisor reports at
  /// most once per 10 s and once when it stops (enforcement-and-ssh.md §1.4, rows "Credential
  /// injection" and "Audit inside the sandbox").
  ///
  /// Errors: PERMISSION_DENIED for callers that are not the sandbox's supervisor (as `SubmitPolicyAnalysis`);
  /// NOT_FOUND for an unknown sandbox; INVALID_ARGUMENT for an empty report, more than 500 entries, a key
  /// that is not an environment name, or a port over 65535.
  func reportCredentialSubstitutions(_ request: Openshell_Audit_V1_ReportCredentialSubstitutionsRequest) async throws {
    let id = try sandboxCaller("ReportCredentialSubstitutions", claimed: request.sandboxID)
    guard !request.substitutions.isEmpty else {
      throw RPCErrors.invalidArgument(field: "substitutions", "the report contains no substitutions")
    }
    guard request.substitutions.count <= Self.maxSubstitutionEntries else {
      throw RPCErrors.invalidArgument(
        field: "substitutions", "at most \(Self.maxSubstitutionEntries) substitutions per report, got \(request.substitutions.count)")
    }
    for (i, s) in request.substitutions.enumerated() {
      guard ProviderCatalog.isEnvironmentName(s.key), s.key.utf8.count <= 256 else {
        throw RPCErrors.invalidArgument(field: "substitutions[\(i)].key", "not a credential key name")
      }
      guard s.port <= 65535 else { throw RPCErrors.invalidArgument(field: "substitutions[\(i)].port", "port \(s.port) is over 65535") }
    }
    @Sendable func clip(_ s: String) -> String { s.count > Self.maxDenialField ? String(s.prefix(Self.maxDenialField)) + "…" : s }
    let actor = CallerIdentity.current.sandboxID != nil ? CallerIdentity.current.actor : "sandbox:\(id)"
    _ = try await store.execute(actor: actor, requestID: "") { state in
      guard let sandbox = state.sandboxes[id] else { throw RPCErrors.notFound("sandbox \(id)") }
      let holders = ProviderEnvironmentResolver.keyHolders(sandbox: sandbox, state: state)
      let event = Openshell_Events_V1_CredentialsSubstituted.with { e in
        e.sandboxID = id
        let firsts = request.substitutions.map(\.firstSeenNs).filter { $0 > 0 }
        e.firstSeenNs = Int64(clamping: firsts.min() ?? 0)
        e.lastSeenNs = Int64(clamping: request.substitutions.map(\.lastSeenNs).max() ?? 0)
        e.substitutions = request.substitutions.map { s in
          .with {
            $0.key = s.key
            $0.provider = holders[s.key] ?? ""
            $0.host = clip(s.host)
            $0.port = s.port
            $0.binary = clip(s.binary)
            $0.count = max(s.count, 1)
          }
        }
      }
      return Decision(events: [GatewayEvent(.credentialsSubstituted(event))])
    }
  }
}
