import EventLog
import GRPCCore
import GRPCProtobuf

#if canImport(Glibc)
  import Glibc
#endif

/// Constructors for the gateway's gRPC errors. Each carries a readable message; invalid arguments
/// also carry `google.rpc.BadRequest` field violations (sent in `grpc-status-details-bin`, which the
/// openshell SDK decodes into `GatewayError.field_violations`).
enum RPCErrors {
  static func invalidArgument(field: String, _ description: String) -> GoogleRPCStatus {
    GoogleRPCStatus(
      code: .invalidArgument, message: "\(field): \(description)",
      details: [.badRequest(violations: [.init(field: field, description: description)])])
  }

  /// INVALID_ARGUMENT with one field violation per `(field, description)`.
  static func invalidArgument(message: String, violations: [(field: String, description: String)]) -> GoogleRPCStatus {
    GoogleRPCStatus(
      code: .invalidArgument, message: message,
      details: [.badRequest(violations: violations.map { .init(field: $0.field, description: $0.description) })])
  }

  static func notFound(_ what: String) -> RPCError { RPCError(code: .notFound, message: "\(what) not found") }
  static func alreadyExists(_ what: String) -> RPCError { RPCError(code: .alreadyExists, message: "\(what) already exists") }
  static func failedPrecondition(_ message: String) -> RPCError { RPCError(code: .failedPrecondition, message: message) }
  static func permissionDenied(_ message: String) -> RPCError { RPCError(code: .permissionDenied, message: message) }

  /// FAILED_PRECONDITION for a credential whose sealed value cannot be opened (its data key was destroyed,
  /// or the log was restored without the archive's key material); says how to recover.
  public static func undecryptable(key: String, provider: String, _ error: any Error) -> RPCError {
    RPCError(
      code: .failedPrecondition,
      message: "credential \(key) of provider \(provider) cannot be decrypted (\(error)); \(recreateHint(provider))")
  }

  /// How to recover a provider whose credentials cannot be opened any more.
  public static func recreateHint(_ provider: String) -> String {
    "re-create the provider with its credentials: openshell provider delete \(provider), then openshell provider create --name \(provider) …"
  }
}
