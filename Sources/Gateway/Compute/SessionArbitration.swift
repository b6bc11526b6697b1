/// Which supervisor session of a sandbox the gateway keeps when a second one presents the sandbox's identity
/// (issue 17: a takeover stranded the genuine supervisor; OpenShell: enforcement-and-ssh.md §5, the
/// supervisor's `instance_id` and `connection_epoch`).
///
/// The genuine supervisor is the one the compute driver launched: its instance id is in the driver's
/// `instance.json` (the same id the driver wrote to the sandbox's `launch.json`). Rules, in order:
/// 1. The driver's instance is known and the newcomer is another instance: refused (FAILED_PRECONDITION).
/// 2. No session yet: accepted.
/// 3. The newcomer is the driver's instance and the incumbent is not (it connected before the instance was
///    known): the incumbent is superseded.
/// 4. Otherwise (same instance, or no driver instance known): a live incumbent — heard from within
///    `staleAfter` (supervisors send a heartbeat every 10 s) — keeps the sandbox and the newcomer is refused
///    (ALREADY_EXISTS; a genuine supervisor retries within a second), so a copy of the instance id cannot
///    take a live session over; a silent incumbent is superseded (a supervisor that reconnects after its
///    connection died gets back within `staleAfter`).
/// A superseded session is told: its `ConnectSupervisor` stream ends with ABORTED, and the supervisor
/// reconnects with its next `connection_epoch`. Epochs are logged, not trusted: any client can send any.
enum SessionArbitration {
  enum Verdict: Equatable {
    case accept
    case supersede
    case refuse(code: RefusalCode, reason: String)
  }
  enum RefusalCode: Equatable { case failedPrecondition, alreadyExists }

  static func decide(
    sandboxID: String, newInstance: String, newEpoch: UInt64, expectedInstance: String?,
    incumbent: (instance: String, epoch: UInt64, silentFor: Duration)?, staleAfter: Duration
  ) -> Verdict {
    if let expected = expectedInstance, !expected.isEmpty, newInstance != expected {
      return .refuse(
        code: .failedPrecondition, reason: "instance \(newInstance.debugDescription) is not the supervisor this gateway launched for sandbox \(sandboxID)")
    }
    guard let incumbent else { return .accept }
    if let expected = expectedInstance, !expected.isEmpty, incumbent.instance != expected { return .supersede }
    if incumbent.silentFor >= staleAfter { return .supersede }
    return .refuse(
      code: .alreadyExists,
      reason: "sandbox \(sandboxID) already has a live supervisor session (instance \(incumbent.instance), epoch \(incumbent.epoch)); retry once it ends")
  }
}
