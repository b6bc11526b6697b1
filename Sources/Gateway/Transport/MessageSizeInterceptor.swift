import GRPCCore
import SwiftProtobuf

/// Enforces the documented request-size limit with a proper status: a request message larger than
/// `limit` bytes (serialized protobuf size) fails with RESOURCE_EXHAUSTED and a message stating the
/// limit, before any handler runs (so nothing is recorded).
///
/// The transport's own hard limit (`GatewayServer.Configuration.transportMaxRequestBytes`) is set
/// higher, because grpc-swift resets the stream (the client sees UNAVAILABLE) rather than answering
/// a status when a frame exceeds it.
public struct MessageSizeInterceptor: ServerInterceptor {
  /// Maximum serialized request message size, bytes.
  public let limit: Int

  /// An interceptor enforcing `limit` bytes per request message.
  public init(limit: Int) {
    self.limit = limit
  }

  /// Checks each request message as the handler reads it: RESOURCE_EXHAUSTED naming the method, the size and
  /// the limit when its serialized size exceeds ``limit``.
  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let limit = self.limit
    let method = context.descriptor.method
    var checked = request
    checked.messages = RPCAsyncSequence(
      wrapping: request.messages.map { message -> Input in
        if let m = message as? any SwiftProtobuf.Message, let size = try? m.serializedBytes() as [UInt8], size.count > limit {
          throw RPCError(code: .resourceExhausted, message: "\(method): request message of \(size.count) bytes exceeds the \(limit)-byte limit")
        }
        return message
      })
    return try await next(checked, context)
  }
}
