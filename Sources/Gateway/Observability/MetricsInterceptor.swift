import GRPCCore
import NIOCore

/// A server interceptor that records every RPC in ``GatewayMetrics``: count and latency by method and
/// final status code. For streaming responses the measurement ends when the response producer returns
/// or throws, i.e. when the final status is known.
public struct MetricsInterceptor: ServerInterceptor {
  private let metrics: GatewayMetrics

  /// An interceptor recording into `metrics`.
  public init(metrics: GatewayMetrics) {
    self.metrics = metrics
  }

  /// Runs the RPC and records its method, final status code (`OK` or the code's name) and latency in seconds,
  /// measured until the response producer ends; errors are rethrown unchanged.
  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let method = context.descriptor.fullyQualifiedMethod
    let start = NIODeadline.now()
    let metrics = self.metrics
    @Sendable func finish(_ code: RPCError.Code?) {
      let seconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
      metrics.recordRPC(method: method, code: code.map(Self.name) ?? "OK", seconds: seconds)
    }
    let response: StreamingServerResponse<Output>
    do {
      response = try await next(request, context)
    } catch {
      finish((error as? RPCError)?.code ?? .unknown)
      throw error
    }
    switch response.accepted {
    case .failure(let error):
      finish(error.code)
      return response
    case .success(var contents):
      let producer = contents.producer
      contents.producer = { writer in
        do {
          let trailers = try await producer(writer)
          finish(nil)
          return trailers
        } catch {
          finish((error as? RPCError)?.code ?? .unknown)
          throw error
        }
      }
      return StreamingServerResponse(accepted: .success(contents))
    }
  }

  /// The status code name from the gRPC spec (`doc/statuscodes.md`), e.g. `NOT_FOUND`.
  static func name(_ code: RPCError.Code) -> String {
    switch code {
    case .cancelled: return "CANCELLED"
    case .unknown: return "UNKNOWN"
    case .invalidArgument: return "INVALID_ARGUMENT"
    case .deadlineExceeded: return "DEADLINE_EXCEEDED"
    case .notFound: return "NOT_FOUND"
    case .alreadyExists: return "ALREADY_EXISTS"
    case .permissionDenied: return "PERMISSION_DENIED"
    case .resourceExhausted: return "RESOURCE_EXHAUSTED"
    case .failedPrecondition: return "FAILED_PRECONDITION"
    case .aborted: return "ABORTED"
    case .outOfRange: return "OUT_OF_RANGE"
    case .unimplemented: return "UNIMPLEMENTED"
    case .internalError: return "INTERNAL"
    case .unavailable: return "UNAVAILABLE"
    case .dataLoss: return "DATA_LOSS"
    case .unauthenticated: return "UNAUTHENTICATED"
    default: return "CODE_\(code.rawValue)"
    }
  }
}
