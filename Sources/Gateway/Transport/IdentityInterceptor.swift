import GRPCCore

/// A server interceptor that binds ``CallerIdentity/current`` for the whole RPC, including a streaming
/// response's producer (which gRPC runs after the handler returned, outside task-local scopes set by
/// the handler). The identity comes from ``PeerCertificateRegistry`` via `ServerContext.remotePeer`.
///
/// Handlers may equally call `registry.identity(forRemotePeer: context.remotePeer)` themselves.
public struct IdentityInterceptor: ServerInterceptor {
  private let registry: PeerCertificateRegistry

  /// An interceptor that looks callers up in `registry`.
  public init(registry: PeerCertificateRegistry) {
    self.registry = registry
  }

  /// Runs the RPC, and its streaming response producer, with ``CallerIdentity/current`` bound to the caller's
  /// identity (anonymous without a verified certificate). Refuses nothing itself.
  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let identity = registry.identity(forRemotePeer: context.remotePeer)
    var response = try await CallerIdentity.$current.withValue(identity) {
      try await next(request, context)
    }
    if case .success(var contents) = response.accepted {
      let producer = contents.producer
      contents.producer = { writer in
        try await CallerIdentity.$current.withValue(identity) { try await producer(writer) }
      }
      response.accepted = .success(contents)
    }
    return response
  }
}
