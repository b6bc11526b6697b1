import EventLog
import GRPCCore
import GRPCProtobuf
import Projections
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

// The gRPC status of every domain error a handler can meet (issue 16: one error funnel). Before, handlers
// converted some at their call sites (`RPCErrors.from`) and the rest reached clients as UNKNOWN
// ("Service method threw an unknown error"): a read of a closed log, an event that does not decode, a
// projection that fails to apply. ``ErrorFunnelInterceptor`` turns each into an `RPCError`. The modules
// that define these types do not depend on gRPC, hence the conformances here.

extension EventLogError: GatewayStatusError {
  /// A full disk or map is RESOURCE_EXHAUSTED, an optimistic-concurrency conflict ABORTED (retry), too many
  /// open files RESOURCE_EXHAUSTED, a failed check DATA_LOSS, anything else UNAVAILABLE. The message never
  /// holds payload bytes (``EventLogError/message``).
  public var status: GoogleRPCStatus {
    switch code {
    case .diskFull:
      return .gateway(
        .resourceExhausted, reason: GatewayErrorReason.storageFull,
        "the gateway's disk is full: nothing was recorded; free space on the gateway host and retry")
    case .mapFull:
      return .gateway(.resourceExhausted, reason: GatewayErrorReason.storageFull, "event log: \(message)")
    case .conflict:
      return .gateway(
        .aborted, reason: GatewayErrorReason.concurrentModification, "concurrent modification, retry: \(message)",
        [.retryInfo(delay: .milliseconds(10))])
    case _ where errno == EMFILE || errno == ENFILE:
      return .gateway(.resourceExhausted, reason: GatewayErrorReason.logUnavailable, "the gateway is out of file descriptors; retry later")
    case .corrupt:
      return .gateway(.dataLoss, reason: GatewayErrorReason.logCorrupt, "event log: \(message)\(seq.map { " (seq \($0))" } ?? "")")
    case .closed:
      return .gateway(.unavailable, reason: GatewayErrorReason.logUnavailable, "the gateway is stopping: its event log is closed; retry")
    default:
      return .gateway(.unavailable, reason: GatewayErrorReason.logUnavailable, "event log: \(message)")
    }
  }
}

extension ProjectionError: GatewayStatusError {
  /// DATA_LOSS: a stored event that cannot be decoded or applied; says how to check the log.
  public var status: GoogleRPCStatus {
    .gateway(
      .dataLoss, reason: GatewayErrorReason.projection,
      "record \(seq) cannot be decoded (\(message)); run `openshell-replay verify` on the gateway host")
  }
}

extension SpawnError: GatewayStatusError {
  /// INTERNAL: the gateway could not start a process it needs.
  public var status: GoogleRPCStatus {
    .gateway(.internalError, reason: GatewayErrorReason.spawn, "cannot start a process: \(message)")
  }
}

extension SecretVault.VaultError: GatewayStatusError {
  /// RESOURCE_EXHAUSTED for a full disk, otherwise FAILED_PRECONDITION (a destroyed or damaged key
  /// needs an operator). The message names keys, never values.
  public var status: GoogleRPCStatus {
    if errno == ENOSPC || errno == EDQUOT {
      return .gateway(
        .resourceExhausted, reason: GatewayErrorReason.storageFull,
        "the gateway's disk is full: cannot store a key; nothing was recorded; free space on the gateway host and retry")
    }
    return .gateway(.failedPrecondition, reason: GatewayErrorReason.vault, "secret vault: \(message)")
  }
}

extension ResourceLimitsError: GatewayStatusError {
  /// INVALID_ARGUMENT: the message says which quantity and what is accepted.
  public var status: GoogleRPCStatus {
    .gateway(.invalidArgument, reason: GatewayErrorReason.resourceLimits, message)
  }
}
