import Foundation
import Gateway
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import Testing

/// Credentials reach only the sandboxes that attach the provider, through the real supervisor, and a
/// rotation reaches a running sandbox without a restart.
@Suite(.serialized) struct ProviderDeliveryTests {
  @Test func credentialsReachOnlyAttachedSandboxesAndRotationsArePushed() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.createProvider(.with {
        $0.provider = .with { $0.metadata.name = "claude"; $0.type = "claude"; $0.credentials = ["ANTHROPIC_API_KEY": "sk-delivery-1"] }
      })
      _ = try await c.createSandbox(.with {
        $0.name = "with-key"
        $0.spec = .with { $0.providers = ["claude"] }
        $0.workspaceScope = .with { $0.workspace = "default" }
      })
      _ = try await c.create("without-key")
      try await c.wait("with-key", .ready)
      try await c.wait("without-key", .ready)

      let seen = try await c.exec("with-key", ["sh", "-c", "printf %s \"$ANTHROPIC_API_KEY\""])
      #expect(seen.exitCode == 0)
      #expect(seen.out == "sk-delivery-1")
      let unseen = try await c.exec("without-key", ["sh", "-c", "printf %s \"${ANTHROPIC_API_KEY:-unset}\""])
      #expect(unseen.out == "unset")

      // Rotate (UpdateProvider with a new value for the key): new processes see it within 1 s.
      _ = try await c.updateProvider(.with { $0.provider = .with { $0.metadata.name = "claude"; $0.credentials = ["ANTHROPIC_API_KEY": "sk-delivery-2"] } })
      let rotatedAt = ContinuousClock.now
      var latest = ""
      while ContinuousClock.now - rotatedAt < .seconds(3) {
        latest = try await c.exec("with-key", ["sh", "-c", "printf %s \"$ANTHROPIC_API_KEY\""]).out
        if latest == "sk-delivery-2" { break }
        try await Task.sleep(for: .milliseconds(50))
      }
      let elapsed = ContinuousClock.now - rotatedAt
      #expect(latest == "sk-delivery-2")
      #expect(elapsed < .seconds(1), "rotation took \(elapsed)")
      let stillUnset = try await c.exec("without-key", ["sh", "-c", "printf %s \"${ANTHROPIC_API_KEY:-unset}\""])
      #expect(stillUnset.out == "unset")
    }
    await gw.stopEverything()
  }
}
