import EventLog
import Foundation
import Projections

/// Appends audit records that are facts about reads and sessions rather than state changes (issue 12):
/// credential disclosures and exec sessions. They carry no request id (a read is not a command and
/// must not occupy the idempotency table) and change no projection state.
///
/// Disclosures are durable *before* the secret leaves the gateway: if the record cannot be written,
/// the caller gets the append error instead of the credentials.
struct AuditRecorder: Sendable {
  let store: GatewayStore

  /// Records that `recipient` received the values of `keys` (names only, never values).
  /// - Throws: `RPCError` (RESOURCE_EXHAUSTED on a full disk, UNAVAILABLE otherwise); the caller must
  ///   not disclose then.
  func disclosed(rpc: String, recipient: String, sandboxID: String, providers: [String], keys: [String]) async throws {
    guard !keys.isEmpty else { return }
    try await append(
      GatewayEvent(
        .credentialsDisclosed(
          .with {
            $0.rpc = rpc
            $0.recipient = recipient
            $0.sandboxID = sandboxID
            $0.providers = providers
            $0.keys = keys.sorted()
          })), actor: recipient)
  }

  /// Records the start of an exec session; arguments containing any of `secrets` are redacted.
  func execStarted(sandboxID: String, execID: String, command: [String], tty: Bool, secrets: [String], actor: String) async throws {
    try await append(
      GatewayEvent(
        .execStarted(
          .with {
            $0.sandboxID = sandboxID
            $0.execID = execID
            $0.command = Self.redact(command, secrets: secrets)
            $0.tty = tty
          })), actor: actor)
  }

  /// Records the end of an exec session: its exit code, or why it ended without one.
  func execEnded(sandboxID: String, execID: String, exitCode: Int32, durationMs: UInt64, error: String, actor: String) async {
    try? await append(
      GatewayEvent(
        .execEnded(
          .with {
            $0.sandboxID = sandboxID
            $0.execID = execID
            $0.exitCode = exitCode
            $0.durationMs = durationMs
            $0.error = error
          })), actor: actor)
  }

  /// Every credential value of the providers in `workspace` (for redaction only; never stored).
  static func providerSecrets(workspace: String, state: GatewayState, vault: SecretVault) -> [String] {
    state.providers.values.filter { $0.workspace == workspace }.flatMap { p in
      p.credentials.compactMap { key, sealed in try? vault.open(sealed, keyID: p.dataKeyID, name: key) }
    }
  }

  /// Replaces every argument that contains one of `secrets` (values of at least 4 bytes) with
  /// `[REDACTED]`.
  static func redact(_ command: [String], secrets: [String]) -> [String] {
    let needles = secrets.filter { $0.utf8.count >= 4 }
    guard !needles.isEmpty else { return command }
    return command.map { arg in needles.contains { arg.contains($0) } ? "[REDACTED]" : arg }
  }

  private func append(_ event: GatewayEvent, actor: String) async throws {
    _ = try await store.log.append([event.newEvent(actor: actor, requestID: "")])
  }
}
