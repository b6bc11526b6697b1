import Foundation
import GRPCCore
import Projections
import Testing

@testable import Gateway

/// Which credential of an inference provider is its API key (``InferenceService/apiKeyVariables``), and the
/// error naming it when the provider has none.
@Suite struct InferenceResolutionTests {
  /// A state holding one provider `llm` of `type` with credentials `keys` (sealed values are not opened here).
  static func state(_ type: String, _ keys: [String]) -> GatewayState {
    var s = GatewayState()
    s.apply(
      GatewayEvent(
        .providerCreated(
          .with {
            $0.id = "p1"; $0.name = "llm"; $0.workspace = InferenceService.providerWorkspace; $0.type = type; $0.dataKeyID = "dk-1"
            $0.credentials = keys.map { k in
              .with {
                $0.key = k; $0.sealed = Data([1, 2, 3])
              }
            }
          })), seq: 1, timestampNs: 1)
    return s
  }

  static func resolve(_ state: GatewayState) throws -> InferenceService.Resolved {
    try InferenceService.resolve(route: InferenceService.userRoute, provider: "llm", model: "m", timeout: 0, state: state)
  }

  @Test("the type's API key variable wins over a credential that sorts first; without it the first by name")
  func apiKeyPerType() throws {
    let expected = ["openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "nvidia": "NVIDIA_API_KEY"]
    #expect(InferenceService.apiKeyVariables == expected)
    #expect(Set(InferenceService.supportedTypes) == Set(expected.keys), "one variable for every supported type")
    for (type, key) in expected.sorted(by: { $0.key < $1.key }) {
      #expect(try Self.resolve(Self.state(type, ["AAA_TOKEN", key, "ZZZ"])).keyName == key, "\(type)")
      #expect(try Self.resolve(Self.state(type, ["ZZZ", "AAA_TOKEN"])).keyName == "AAA_TOKEN", "\(type)")
      let error = try #require(throws: RPCError.self) { try Self.resolve(Self.state(type, [])) }
      #expect(error.code == .failedPrecondition)
      #expect(error.message == "provider 'llm' has no API key credential (expected \(key))", "\(type)")
    }
  }
}
