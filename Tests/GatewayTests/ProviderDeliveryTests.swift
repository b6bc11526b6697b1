import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Gateway
import OpenShellAPI
import Testing

/// Credentials reach only the sandboxes that attach the provider, through the real supervisor, as
/// placeholders (the values stay in the supervisor), and a change reaches a running sandbox without a
/// restart.
@Suite(.serialized) struct ProviderDeliveryTests {
  @Test func credentialsReachOnlyAttachedSandboxesAndRotationsArePushed() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      _ = try await c.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "claude"; $0.type = "claude"; $0.credentials = ["ANTHROPIC_API_KEY": "sk-delivery-1"]
          }
        })
      _ = try await c.createSandbox(
        .with {
          $0.name = "with-key"
          $0.spec = .with { $0.providers = ["claude"] }
          $0.workspaceScope = .with { $0.workspace = "default" }
        })
      _ = try await c.create("without-key")
      try await c.wait("with-key", .ready)
      try await c.wait("without-key", .ready)

      // The sandbox holds the placeholder, never the value (the proxy resolves it: L7InspectionTests).
      let seen = try await c.exec("with-key", ["sh", "-c", "printf %s \"$ANTHROPIC_API_KEY\""])
      #expect(seen.exitCode == 0)
      #expect(seen.out == "openshell:resolve:env:ANTHROPIC_API_KEY")
      let environ = try await c.exec("with-key", ["sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c sk-delivery || true"])
      #expect(environ.out == "0\n", "\(environ.out)")
      let unseen = try await c.exec("without-key", ["sh", "-c", "printf %s \"${ANTHROPIC_API_KEY:-unset}\""])
      #expect(unseen.out == "unset")

      // A key added to the provider is pushed: new processes get its placeholder within 1 s.
      _ = try await c.updateProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "claude"; $0.credentials = ["CLAUDE_API_KEY": "sk-delivery-2"]
          }
        })
      let rotatedAt = ContinuousClock.now
      var latest = ""
      while ContinuousClock.now - rotatedAt < .seconds(3) {
        latest = try await c.exec("with-key", ["sh", "-c", "printf %s \"$CLAUDE_API_KEY\""]).out
        if latest == "openshell:resolve:env:CLAUDE_API_KEY" { break }
        try await Task.sleep(for: .milliseconds(50))
      }
      let elapsed = ContinuousClock.now - rotatedAt
      #expect(latest == "openshell:resolve:env:CLAUDE_API_KEY")
      #expect(elapsed < .seconds(1), "the push took \(elapsed)")
      let stillUnset = try await c.exec("without-key", ["sh", "-c", "printf %s \"${CLAUDE_API_KEY:-unset}\""])
      #expect(stillUnset.out == "unset")
    }
    await gw.stopEverything()
  }
}
