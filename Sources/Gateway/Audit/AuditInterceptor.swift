import GRPCCore

/// A server interceptor that reports every refused call (status PERMISSION_DENIED or UNAUTHENTICATED,
/// whether thrown by a handler, an earlier interceptor or a streaming producer) to the
/// ``RefusalAggregator`` with the caller's identity, peer address, RPC and reason (issue 12).
///
/// Place it after ``IdentityInterceptor`` and ``SandboxTokenInterceptor`` so the identity is bound.
/// It never changes the outcome of a call.
struct AuditInterceptor: ServerInterceptor {
  let refusals: RefusalAggregator

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let rpc = context.descriptor.fullyQualifiedMethod
    let peer = context.remotePeer
    let identity = CallerIdentity.current.actor
    let refusals = self.refusals
    @Sendable func note(_ error: any Error) async {
      guard let e = error as? RPCError, e.code == .permissionDenied || e.code == .unauthenticated else { return }
      await refusals.refused(identity: identity, peer: peer, rpc: rpc, code: MetricsInterceptor.name(e.code), reason: e.message)
    }
    let response: StreamingServerResponse<Output>
    do {
      response = try await next(request, context)
    } catch {
      await note(error)
      throw error
    }
    switch response.accepted {
    case .failure(let error):
      await note(error)
      return response
    case .success(var contents):
      let producer = contents.producer
      contents.producer = { writer in
        do {
          return try await producer(writer)
        } catch {
          await note(error)
          throw error
        }
      }
      return StreamingServerResponse(accepted: .success(contents))
    }
  }
}
