import GRPCCore
import GRPCProtobuf
import Logging
import NIOCore

#if canImport(Glibc)
  import Glibc
#endif

/// A gateway domain error that knows the gRPC status it is answered with (issue 16: one error funnel).
///
/// The model is grpc-swift-2's `RPCErrorConvertible` (`Sources/GRPCCore/RPCError.swift`): the error
/// carries its code, a message written for people, and `google.rpc` details (sent in
/// `grpc-status-details-bin`), and it is converted to an `RPCError` in exactly one place,
/// ``ErrorFunnelInterceptor``. Every status carries a `google.rpc.ErrorInfo` whose `reason` is one of
/// ``GatewayErrorReason`` in the domain ``GatewayErrorReason/domain``, so clients (the CLI) decide on the
/// code and the reason, never on the message text.
public protocol GatewayStatusError: Error, RPCErrorConvertible {
  /// The status the error is answered with (code, message, details).
  var status: GoogleRPCStatus { get }
}

extension GatewayStatusError {
  /// The gRPC status code of ``status``.
  public var rpcErrorCode: RPCError.Code { status.code }
  /// The message of ``status``, written for people.
  public var rpcErrorMessage: String { status.message }
  /// ``status`` as trailing metadata: the `google.rpc.Status` details in `grpc-status-details-bin`.
  public var rpcErrorMetadata: Metadata { status.rpcErrorMetadata }
}

/// Machine-readable reasons sent in `google.rpc.ErrorInfo.reason` (domain ``domain``). Strings, not an
/// enum, so the set can grow without breaking clients that switch over it (grpc-swift's extensible
/// `Code` idea); a client treats an unknown reason like no reason.
public enum GatewayErrorReason {
  /// `ErrorInfo.domain` of every reason below.
  public static let domain = "openshell.gateway"
  /// The event log refused the append because the gateway's disk or map is full (RESOURCE_EXHAUSTED).
  public static let storageFull = "STORAGE_FULL"
  /// An expected-version append lost a race (ABORTED; retry the command).
  public static let concurrentModification = "CONCURRENT_MODIFICATION"
  /// The event log is closed or failed (UNAVAILABLE; the gateway is stopping or broken).
  public static let logUnavailable = "EVENT_LOG_UNAVAILABLE"
  /// A stored record failed a check (DATA_LOSS).
  public static let logCorrupt = "EVENT_LOG_CORRUPT"
  /// A stored event could not be decoded or applied (DATA_LOSS).
  public static let projection = "PROJECTION_FAILED"
  /// The secret vault could not create, seal or open a key (see the status code).
  public static let vault = "SECRET_VAULT"
  /// The call carried no bearer token on a gateway that requires one (UNAUTHENTICATED).
  public static let bearerTokenMissing = "BEARER_TOKEN_MISSING"
  /// The bearer token was refused (UNAUTHENTICATED).
  public static let bearerTokenInvalid = "BEARER_TOKEN_INVALID"
  /// A resource quantity could not be parsed or applied (INVALID_ARGUMENT).
  public static let resourceLimits = "RESOURCE_LIMITS"
  /// The peer's connection closed while the call was still writing to it (UNAVAILABLE): the client or the
  /// supervisor went away, e.g. at the end of a transfer. Nobody is left to read the status.
  public static let peerGone = "PEER_GONE"
  /// A process could not be started (INTERNAL).
  public static let spawn = "SPAWN_FAILED"
  /// An error of no domain type reached the funnel: a bug, answered INTERNAL and logged.
  public static let internalError = "INTERNAL"
  /// A status the gateway answered with and no finer reason (its code and message say it all). Its
  /// presence tells a client the status came from the gateway, not from its own transport.
  public static let unspecified = "UNSPECIFIED"
}

extension GoogleRPCStatus {
  /// A status with an `ErrorInfo` detail (`reason` in ``GatewayErrorReason/domain``) and any further details.
  static func gateway(_ code: RPCError.Code, reason: String, _ message: String, _ more: [ErrorDetails] = []) -> GoogleRPCStatus {
    GoogleRPCStatus(code: code, message: message, details: [.errorInfo(reason: reason, domain: GatewayErrorReason.domain)] + more)
  }
}

/// The one place where errors become gRPC statuses.
public enum ErrorFunnel {
  /// The funnel's logger (label `openshell.gateway.errors`).
  public static let logger = Logger(label: "openshell.gateway.errors")

  /// The status for `error`: an `RPCError` as it is, an `RPCErrorConvertible` (every domain error) by its
  /// own code, message and details, a cancellation CANCELLED; anything else is a bug: it is logged in full
  /// and answered INTERNAL naming only its type (the description may hold request data), never UNKNOWN.
  /// A status without `google.rpc` details gets an `ErrorInfo` with ``GatewayErrorReason/unspecified``,
  /// so every status the gateway sends says it came from the gateway.
  /// A peer that went away mid-write (``isPeerGone(_:)``) is UNAVAILABLE with ``GatewayErrorReason/peerGone``,
  /// logged at debug level only.
  /// - Parameter log: where the unclassified (error level) and peer-gone (debug level) cases are logged.
  public static func rpcError(_ error: any Error, rpc: String, log: Logger = logger) -> RPCError {
    switch error {
    case let e as RPCError where e.code == .unknown && e.cause != nil && !(e.cause is RPCError):
      // grpc-swift wraps what an inner interceptor threw as UNKNOWN with the error as its cause.
      return rpcError(e.cause!, rpc: rpc, log: log)
    case let e as RPCError: return withDetails(e)
    case let e as any RPCErrorConvertible: return withDetails(RPCError(e))
    case is CancellationError:
      return withDetails(RPCError(code: .cancelled, message: "the call was cancelled"))
    case _ where isPeerGone(error):
      // Not a bug: the other end closed its connection while a write was under way (a relay at the end of
      // an scp, a client killed mid-stream). Debug level: it happens in normal operation.
      log.debug("\(rpc): the peer went away: \(type(of: error)): \(error)")
      return RPCError(
        GoogleRPCStatus.gateway(.unavailable, reason: GatewayErrorReason.peerGone, "the connection to the peer closed during \(rpc)"))
    default:
      log.error("\(rpc): unclassified error \(type(of: error)): \(error)")
      return RPCError(
        GoogleRPCStatus.gateway(
          .internalError, reason: GatewayErrorReason.internalError,
          "internal error (\(type(of: error))) in \(rpc); the gateway log has the details"))
    }
  }

  /// Whether `error` says the peer's connection closed under a write: SwiftNIO's `ChannelError`
  /// (`ioOnClosedChannel`, `alreadyClosed`, `outputClosed`, `inputClosed`, `eof`) or an `IOError` with
  /// errno EPIPE or ECONNRESET. Anything else (connect timeouts, TLS errors…) stays unclassified.
  public static func isPeerGone(_ error: any Error) -> Bool {
    switch error {
    case let e as ChannelError:
      switch e {
      case .ioOnClosedChannel, .alreadyClosed, .outputClosed, .inputClosed, .eof: return true
      default: return false
      }
    case let e as IOError: return e.errnoCode == EPIPE || e.errnoCode == ECONNRESET
    default: return false
    }
  }

  /// `error` with an `ErrorInfo` (``GatewayErrorReason/unspecified``) when it carries no details yet.
  static func withDetails(_ error: RPCError) -> RPCError {
    guard error.metadata[binaryValues: "grpc-status-details-bin"].first(where: { _ in true }) == nil else { return error }
    var out = RPCError(GoogleRPCStatus.gateway(error.code, reason: GatewayErrorReason.unspecified, error.message))
    out.metadata.add(contentsOf: error.metadata)
    out.cause = error.cause
    return out
  }
}

/// Converts every error a handler, a later interceptor or a streaming producer throws with
/// ``ErrorFunnel/rpcError(_:rpc:)``. ``GatewayServer`` installs it after the interceptors it is given, so the
/// metrics, audit and refusal interceptors see the final status code, and before its subscription-drain
/// interceptor, whose "shutting down" answer is funnelled too.
struct ErrorFunnelInterceptor: ServerInterceptor {
  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let rpc = context.descriptor.method
    var response: StreamingServerResponse<Output>
    do {
      response = try await next(request, context)
    } catch {
      throw ErrorFunnel.rpcError(error, rpc: rpc)
    }
    switch response.accepted {
    case .failure(let error):
      // What a later interceptor or the handler threw, as grpc-swift passes it up between interceptors.
      response.accepted = .failure(ErrorFunnel.rpcError(error, rpc: rpc))
    case .success(var contents):
      let producer = contents.producer
      contents.producer = { writer in
        do {
          return try await producer(writer)
        } catch {
          throw ErrorFunnel.rpcError(error, rpc: rpc)
        }
      }
      response.accepted = .success(contents)
    }
    return response
  }
}

extension RPCError {
  /// The ``GatewayErrorReason`` a gateway sent with this status (its `google.rpc.ErrorInfo` in domain
  /// ``GatewayErrorReason/domain``), or nil (no details, another domain, or an error the client made up).
  public var gatewayReason: String? {
    guard let status = try? unpackGoogleRPCStatus() else { return nil }
    return status.details.lazy.compactMap(\.errorInfo).first { $0.domain == GatewayErrorReason.domain }?.reason
  }
}
