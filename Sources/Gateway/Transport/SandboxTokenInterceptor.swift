import GRPCCore
import SandboxProtocol

/// Binds ``SandboxTokenInterceptor/current`` to the `x-openshell-sandbox-token` metadata of the call.
///
/// Sandbox supervisors present their own client certificate; the token is the fallback for gateways
/// that do not verify client certificates (`--disable-gateway-auth`, `--plaintext`). It is consulted
/// only for supervisor-facing RPCs and only when the caller has no certificate identity.
public struct SandboxTokenInterceptor: ServerInterceptor {
  @TaskLocal static var current: String = ""

  /// A stateless interceptor.
  public init() {}

  /// Runs the RPC, and its streaming response producer, with the call's sandbox token bound (empty when the
  /// metadata has none). Verifies nothing: the supervisor-facing handlers check the token.
  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let token = request.metadata[stringValues: SandboxProtocol.tokenHeader].first(where: { _ in true }) ?? ""
    guard !token.isEmpty else { return try await next(request, context) }
    var response = try await Self.$current.withValue(token) { try await next(request, context) }
    if case .success(var contents) = response.accepted {
      let producer = contents.producer
      contents.producer = { writer in try await Self.$current.withValue(token) { try await producer(writer) } }
      response.accepted = .success(contents)
    }
    return response
  }
}
