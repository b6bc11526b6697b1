import Foundation
import Logging
import Projections
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// Renewal of sandbox client certificates by the local driver (issue 16: they expired after 30 days and
/// were never renewed, so a long-lived sandbox was cut off at its next reconnect).
///
/// A running sandbox's certificate is renewed at 2/3 of its lifetime (issue time to `notAfter`, both as
/// recorded in its `certificate.issued` event), e.g. day 20 of 30. The driver issues a new certificate
/// and key, replaces `run/tls.key` and then `run/tls.crt` (each written to a temporary file and renamed,
/// so the supervisor never reads half a file or a certificate without its key), records a
/// `certificate.issued` event for the sandbox (the renewal; the projection's active certificate of
/// `sandbox:<id>` becomes the new one) and writes a line to the sandbox's log. The supervisor takes the new
/// identity for its next call (`RenewingTransport` in the supervisor) without restarting anything.
///
/// Order: files first, then the event. A crash in between leaves the old certificate recorded as active,
/// which is past its renewal time, so the next pass renews again: harmless. The reverse order could record
/// a certificate that never reached the sandbox while the one it holds expires.
///
/// The pass runs every `min(60 s, lifetime / 6)`, so a certificate is renewed within a sixth of its
/// lifetime after its due time, well before it expires; a gateway that was down past a due time renews at
/// start (a sandbox whose certificate expired meanwhile reconnects as soon as the new files are in place).
enum SandboxCertificateRenewal {
  /// When a certificate issued at `issuedNs` and valid until `notAfterNs` (ns since the epoch) is renewed.
  static func dueNs(issuedNs: UInt64, notAfterNs: Int64) -> Int64 {
    let issued = Int64(clamping: issuedNs)
    return issued + (notAfterNs - issued) * 2 / 3
  }

  /// How often the driver looks for certificates due for renewal.
  static func passInterval(lifetime: TimeInterval) -> Duration {
    .milliseconds(Int64(min(60, max(lifetime / 6, 0.5)) * 1000))
  }
}

extension LocalComputeDriver {
  /// The renewal pass, forever: renews the certificate of every running sandbox that is due.
  func renewCertificates(_ store: GatewayStore) async throws {
    guard pki != nil, usesTLS else { return }
    let interval = SandboxCertificateRenewal.passInterval(lifetime: sandboxCertificateLifetime)
    while !Task.isCancelled {
      let state = await store.state
      let now = Int64(Date().timeIntervalSince1970 * 1e9)
      for id in runningSandboxIDs() {
        guard let fingerprint = state.activeCertificates["sandbox:\(id)"], let record = state.certificates[fingerprint],
          SandboxCertificateRenewal.dueNs(issuedNs: record.issuedNs, notAfterNs: record.notAfterNs) <= now
        else { continue }
        queue.enqueue(id) { [self] in
          do { try await renewCertificate(id, expected: fingerprint, store) } catch {
            logger.warning("sandbox \(id): certificate renewal failed: \(error)")
            hub.logs.gateway(id, "cannot renew the sandbox certificate: \(error)", level: "ERROR")
          }
        }
      }
      try await Task.sleep(for: interval)
    }
  }

  /// Renews the certificate of sandbox `id` if it still runs and `expected` is still its active certificate.
  func renewCertificate(_ id: String, expected: String, _ store: GatewayStore) async throws {
    guard let pki, runningSandboxIDs().contains(id) else { return }
    try await store.catchUp()
    let state = await store.state
    guard let s = state.sandboxes[id], [.provisioning, .starting, .ready].contains(s.phase),
      state.activeCertificates["sandbox:\(id)"] == expected
    else { return }
    let cert = try pki.issueSandboxCertificate(sandboxID: id, lifetime: sandboxCertificateLifetime)
    let run = dir(id) + "/run"
    try Self.replace(run + "/tls.key", with: cert.privateKeyPEM, mode: 0o600)
    try Self.replace(run + "/tls.crt", with: cert.certificatePEM, mode: 0o644)
    try await store.record([Self.certificateIssued(sandboxID: id, cert.issuance)])
    let expires = ISO8601DateFormatter().string(from: cert.issuance.notAfter)
    hub.logs.gateway(id, "sandbox certificate renewed (sha256:\(cert.issuance.fingerprintSHA256.prefix(16))…, valid until \(expires))")
  }

  /// The `certificate.issued` event of a sandbox certificate (at launch and at every renewal).
  static func certificateIssued(sandboxID: String, _ i: CertificateIssuance) -> GatewayEvent {
    GatewayEvent(
      .certificateIssued(
        .with {
          $0.role = "sandbox"
          $0.sandboxID = sandboxID
          $0.subject = i.subject
          $0.fingerprintSha256 = i.fingerprintSHA256
          $0.serialHex = i.serialHex
          $0.notBeforeNs = Int64(i.notBefore.timeIntervalSince1970 * 1e9)
          $0.notAfterNs = Int64(i.notAfter.timeIntervalSince1970 * 1e9)
        }))
  }

  /// Writes `text` to a temporary file beside `path` (mode `mode`), flushes it and renames it over `path`.
  static func replace(_ path: String, with text: String, mode: mode_t) throws {
    let temporary = path + ".new"
    Glibc.unlink(temporary)
    let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
    guard fd >= 0 else { throw SpawnError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
    let bytes = Array(text.utf8)
    let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    let synced = Glibc.fsync(fd)
    Glibc.close(fd)
    guard written == bytes.count, synced == 0, Glibc.rename(temporary, path) == 0 else {
      Glibc.unlink(temporary)
      throw SpawnError("cannot replace \(path): \(String(cString: strerror(errno)))")
    }
  }
}
