import Foundation
import GRPCCore
import GRPCProtobuf

/// Authenticates callers by OIDC bearer tokens (`authorization: Bearer <JWT>` metadata, RFC 6750 §2.1)
/// when the gateway runs with ``OIDCSettings`` (issue 13).
///
/// Rules, applied to every RPC (place after ``IdentityInterceptor`` and ``SandboxTokenInterceptor``,
/// before ``AuditInterceptor`` so that handlers' refusals name the token's subject):
/// - A bearer token is presented: it must verify (``BearerVerifier``), else UNAUTHENTICATED with the
///   reason (UNAVAILABLE when the issuer's keys cannot be fetched). A verified token makes the caller
///   the operator `oidc:<sub>` for the whole call, also when it holds an operator or user certificate
///   (mTLS and bearer together: the transport proves the client certificate, the token the person).
///   A sandbox certificate stays the sandbox: a token never turns a sandbox into an operator.
/// - No token, with a certificate identity (mTLS): the certificate's identity, as without OIDC.
/// - No token, no certificate: only `Health` and the supervisor-facing RPCs (which check the sandbox
///   token of ``SandboxTokenInterceptor`` themselves) are let through, the latter only with a sandbox
///   token; everything else is UNAUTHENTICATED ("missing bearer token").
///
/// Refusals decided here are reported to the ``RefusalAggregator`` (`audit.access_refused`).
struct BearerAuthInterceptor: ServerInterceptor {
  let verifier: BearerVerifier
  let refusals: RefusalAggregator

  /// Callable without any credential.
  static let publicMethods: Set<String> = ["openshell.v1.OpenShell/Health"]
  /// Supervisor-facing RPCs (those whose handlers call `sandboxCaller`/`dualCaller`): reachable without a
  /// bearer token when the call carries a sandbox token, which the handler then verifies.
  static let supervisorMethods: Set<String> = [
    "openshell.v1.OpenShell/ConnectSupervisor", "openshell.v1.OpenShell/RelayStream",
    "openshell.v1.OpenShell/PushSandboxLogs", "openshell.v1.OpenShell/ReportMainProcessExit",
    "openshell.v1.OpenShell/GetSandboxProviderEnvironment", "openshell.v1.OpenShell/GetSandboxConfig",
    "openshell.v1.OpenShell/UpdateConfig", "openshell.v1.OpenShell/ReportPolicyStatus",
    "openshell.v1.OpenShell/SubmitPolicyAnalysis", "openshell.audit.v1.SandboxAuditReports/ReportCredentialSubstitutions",
    "openshell.inference.v1.Inference/GetInferenceBundle", "openshell.inference.v1.Inference/WatchInferenceBundle",
  ]

  static let loginHint = "log in with: openshell gateway login"

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let rpc = context.descriptor.fullyQualifiedMethod
    let caller = CallerIdentity.current
    let header = request.metadata[stringValues: "authorization"].first(where: { _ in true })

    guard let header else {
      if caller.kind != .anonymous || Self.publicMethods.contains(rpc) { return try await next(request, context) }
      if Self.supervisorMethods.contains(rpc), !SandboxTokenInterceptor.current.isEmpty { return try await next(request, context) }
      throw await refuse(
        rpc, context, caller, .unauthenticated, reason: GatewayErrorReason.bearerTokenMissing,
        "missing bearer token: this gateway requires an OIDC access token (authorization: Bearer …); \(Self.loginHint)")
    }
    if caller.sandboxID != nil { return try await next(request, context) }
    let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
    guard parts.count == 2, parts[0].lowercased() == "bearer" else {
      throw await refuse(
        rpc, context, caller, .unauthenticated, reason: GatewayErrorReason.bearerTokenInvalid, "the authorization metadata is not a Bearer token")
    }
    let verified: VerifiedBearer
    do throws(BearerRefusal) {
      verified = try await verifier.verify(String(parts[1]).trimmingCharacters(in: .whitespaces))
    } catch {
      if error.issuerUnavailable {
        throw await refuse(
          rpc, context, caller, .unavailable, reason: GatewayErrorReason.bearerTokenInvalid, "cannot verify the bearer token: \(error.description)")
      }
      throw await refuse(
        rpc, context, caller, .unauthenticated, reason: GatewayErrorReason.bearerTokenInvalid, "invalid bearer token: \(error.description); \(Self.loginHint)")
    }
    let identity = CallerIdentity(oidcSubject: verified.subject)
    var response = try await CallerIdentity.$current.withValue(identity) { try await next(request, context) }
    if case .success(var contents) = response.accepted {
      let producer = contents.producer
      contents.producer = { writer in
        try await CallerIdentity.$current.withValue(identity) { try await producer(writer) }
      }
      response.accepted = .success(contents)
    }
    return response
  }

  /// Reports the refusal and returns the status, with a `google.rpc.ErrorInfo` naming `reason` (a
  /// ``GatewayErrorReason``) so clients decide on it rather than on the message.
  private func refuse(
    _ rpc: String, _ context: ServerContext, _ caller: CallerIdentity, _ code: RPCError.Code, reason: String, _ message: String
  ) async -> RPCError {
    await refusals.refused(
      identity: caller.actor, peer: context.remotePeer, rpc: rpc, code: MetricsInterceptor.name(code), reason: message)
    return RPCError(GoogleRPCStatus.gateway(code, reason: reason, message))
  }
}
