import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import Testing

@testable import Gateway

/// `https://inference.local` from inside a real sandbox (issue 10): the proxy terminates TLS with the
/// sandbox CA and forwards OpenAI-shaped requests to the gateway's `inference.local` route with the
/// provider's key injected, the caller's credentials stripped and the model replaced; other requests
/// are refused. The route's upstream is the python3 HTTPS test server (test CA trusted by the proxy)
/// on 127.0.0.1 under the /etc/hosts name llm.l7.test; no network policy allows it: inference.local
/// needs none, the upstream itself stays unreachable directly.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct InferenceLocalTests {
  @Test("inference.local forwards to the configured route with the provider key; the agent never sees the key")
  func routed() async throws {
    let up = try TLSUpstream.start(names: ["llm.l7.test"])
    defer { up.stop() }
    let hosts = try TestHosts(["llm.l7.test"])
    defer { hosts.remove() }
    let key = "sk-inference-\(UUID().uuidString)"
    try await withTLSGateway(trusting: up.caPath) { gw in
      try await gw.withClient { c in
        try await c.createWithPolicy("inf1", try NetworkPolicies.policy(""))
        try await c.wait("inf1", .ready)
        try await c.waitLoaded("inf1")

        // Before a route exists the CONNECT is refused with the reason.
        let none = try await c.exec("inf1", ["/usr/bin/curl", "-sS", "https://inference.local/v1/models"])
        #expect(none.exitCode == 56 && none.err.contains("403"), "\(none.err)")

        _ = try await c.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "llm"; $0.type = "openai"; $0.credentials = ["OPENAI_API_KEY": key]
              $0.config = ["OPENAI_BASE_URL": "https://llm.l7.test:\(up.port)/v1"]
            }
          })
        try await gw.withInference { inf in
          _ = try await inf.setInferenceRoute(
            .with {
              $0.providerName = "llm"; $0.modelID = "route-model"; $0.noVerify = true
            })
        }
        let body = #"{"model": "agent-choice", "messages": [{"role": "user", "content": "hi"}]}"#
        var chat = Openshell_V1_OpenShell.Client<HTTP2ClientTransport.Posix>.ExecResult()
        for _ in 0..<50 {
          chat = try await c.exec(
            "inf1",
            [
              "/usr/bin/curl", "-sS", "-w", "\\n%{http_code}", "-H", "Authorization: Bearer agent-own-key", "-H", "Content-Type: application/json",
              "-d", body, "https://inference.local/v1/chat/completions",
            ])
          if chat.out.hasSuffix("\n200") { break }
          try await Task.sleep(for: .milliseconds(100))
        }
        #expect(chat.out.hasSuffix("\n200"), "\(chat.out) \(chat.err)")
        #expect(chat.out.contains("\"path\": \"/v1/chat/completions\""), "\(chat.out)")
        #expect(chat.out.contains("route-model") && !chat.out.contains("agent-choice"), "the route's model replaces the caller's: \(chat.out)")
        #expect(chat.out.contains(TLSUpstream.sha256("Bearer \(key)")), "\(chat.out)")
        let arrived = up.requests.last { $0.contains("/v1/chat/completions") } ?? ""
        #expect(arrived.contains("| Bearer \(key) |") && !arrived.contains("agent-own-key"), "\(arrived)")

        // Python (urllib, SSL_CERT_FILE) and model discovery.
        let py = try await c.exec(
          "inf1",
          [
            "/usr/bin/python3", "-c",
            """
            import urllib.request
            print(urllib.request.urlopen('https://inference.local/v1/models', timeout=10).read().decode())
            """,
          ])
        #expect(py.out.contains("\"method\": \"GET\"") && py.out.contains("/v1/models"), "\(py.out) \(py.err)")

        // Anything but an inference request is refused; the agent's environment holds no key.
        let other = try await c.exec("inf1", ["/usr/bin/curl", "-sS", "-w", "\\n%{http_code}", "-X", "DELETE", "https://inference.local/v1/files/x"])
        #expect(other.out.hasSuffix("\n403") && other.out.contains("is not an inference request"), "\(other.out)")
        let wrongProtocol = try await c.exec("inf1", ["/usr/bin/curl", "-sS", "-w", "\\n%{http_code}", "-d", "{}", "https://inference.local/v1/messages"])
        #expect(wrongProtocol.out.hasSuffix("\n403") && wrongProtocol.out.contains("does not serve anthropic_messages"), "\(wrongProtocol.out)")
        #expect(!up.requests.contains { $0.contains("/v1/files") || $0.contains("/v1/messages") })
        let environ = try await c.exec("inf1", ["/bin/sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c 'sk-inference' || true"])
        #expect(environ.out == "0\n")
        // The route's upstream itself is not reachable past the policy.
        let direct = try await c.exec("inf1", ["/usr/bin/curl", "-sS", "-w", "\\n%{http_code}", "https://llm.l7.test:\(up.port)/v1/models"])
        #expect(direct.exitCode == 56 && direct.err.contains("403"), "\(direct.out) \(direct.err)")
      }
    }
  }
}

extension SandboxGateway {
  /// The inference service client, as the operator.
  func withInference<R: Sendable>(_ body: @Sendable (Openshell_Inference_V1_Inference.Client<HTTP2ClientTransport.Posix>) async throws -> R) async throws -> R {
    let pki = self.pki
    let security = HTTP2ClientTransport.Posix.TransportSecurity.mTLS(
      certificateChain: [.file(path: pki.clientCertificatePath, format: .pem)],
      privateKey: .file(path: pki.clientKeyPath, format: .pem)
    ) { $0.trustRoots = .certificates([.file(path: pki.caCertificatePath, format: .pem)]) }
    let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: security)
    return try await withGRPCClient(transport: transport) { client in
      try await body(Openshell_Inference_V1_Inference.Client(wrapping: client))
    }
  }
}
