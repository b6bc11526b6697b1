import Foundation
import GRPCCore
import OpenShellAPI
import Testing

@testable import Gateway

/// Provider key limits count bytes of UTF-8 everywhere (credential keys, config keys, the keys
/// GetProviderCredentials is asked for), and their messages say bytes.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ProviderKeyLimitTests {
  @Test("a multi-byte config key at 256 bytes is accepted, one over is refused naming bytes; credential keys likewise")
  func keyLimitsCountBytes() async throws {
    let gw = try await ProviderGateway.start()
    let limit = OpenShellService.ProviderLimits.maxKeyLength
    #expect(limit == 256)
    let atLimit = String(repeating: "é", count: limit / 2)  // 128 characters, 256 bytes
    let over = atLimit + "é"  // 129 characters, 258 bytes: under 256 characters, over 256 bytes
    let longest = String(repeating: "K", count: limit)
    try await gw.withClient { api in
      let created = try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "wide"; $0.type = "generic"; $0.credentials = [longest: "v1"]; $0.config = [atLimit: "x"]
          }
        })
      #expect(created.provider.config == [atLimit: "x"])
      let refused = await rpcError {
        _ = try await api.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "wider"; $0.type = "generic"; $0.credentials = ["K": "v"]; $0.config = [over: "x"]
            }
          })
      }
      #expect(refused?.code == .invalidArgument)
      #expect(refused?.message == "provider.config: config key \(over.debugDescription) must be 1-256 bytes of UTF-8 (it is 258 bytes)")
      let control = await rpcError {
        _ = try await api.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "ctl"; $0.type = "generic"; $0.credentials = ["K": "v"]; $0.config = ["a\u{7}": "x"]
            }
          })
      }
      #expect(control?.message == "provider.config: config key \("a\u{7}".debugDescription) contains control characters")
      let longCredential = await rpcError {
        _ = try await api.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "longc"; $0.type = "generic"; $0.credentials = [longest + "K": "v"]
            }
          })
      }
      #expect(longCredential?.message.hasSuffix("must match [A-Za-z_][A-Za-z0-9_]* and be at most 256 bytes") == true, "\(String(describing: longCredential))")

      // GetProviderCredentials: a 256-byte key is within the limit (found), 257 bytes is refused, a
      // multi-byte key is refused whatever its length (keys are ASCII environment names).
      let got = try await api.getProviderCredentials(
        .with {
          $0.name = "wide"; $0.credentialKeys = [longest]
        })
      #expect(got.credentials.mapValues(\.value) == [longest: "v1"])
      for key in [longest + "K", atLimit] {
        let e = await rpcError {
          _ = try await api.getProviderCredentials(
            .with {
              $0.name = "wide"; $0.credentialKeys = [key]
            })
        }
        #expect(e?.code == .invalidArgument)
        #expect(e?.message == "credential_keys: key \(key.debugDescription) must match [A-Za-z_][A-Za-z0-9_]* (at most 256 bytes)")
      }
    }
    await gw.stop()
  }
}
