import Foundation
import GRPCCore
import OpenShellAPI
import SwiftProtobuf
import Testing

@testable import Gateway

/// Issue 17: documented limits per field and per object, and list pages bounded by bytes.
@Suite struct ObjectLimitsTests {

  @Test func oversizedFieldsAndSpecsAreRefusedNamingTheLimit() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    try await gw.withClient { api in
      let labels = Dictionary(uniqueKeysWithValues: (0..<65).map { ("k\($0)", "v") })
      var e = await rpcError {
        _ = try await api.createSandbox(
          .with {
            $0.name = "many-labels"; $0.labels = labels
          })
      }
      #expect(e?.code == .invalidArgument && e?.message.contains("at most 64") == true, "\(String(describing: e))")

      e = await rpcError {
        _ = try await api.createSandbox(
          .with {
            $0.name = "big-env"; $0.spec.environment = ["BIG": String(repeating: "v", count: 40_000)]
          })
      }
      #expect(e?.code == .invalidArgument && e?.message.contains("32768 bytes per variable") == true, "\(String(describing: e))")

      let manyVars = Dictionary(uniqueKeysWithValues: (0..<8).map { ("V\($0)", String(repeating: "v", count: 30_000)) })
      e = await rpcError {
        _ = try await api.createSandbox(
          .with {
            $0.name = "env-total"; $0.spec.template.environment = manyVars
          })
      }
      #expect(e?.code == .invalidArgument && e?.message.contains("131072 bytes per environment") == true, "\(String(describing: e))")

      e = await rpcError {
        _ = try await api.createSandbox(
          .with {
            $0.name = "huge-spec"; $0.spec.template.driverConfig = Self.blob(600_000)
          })
      }
      #expect(e?.code == .resourceExhausted && e?.message.contains("524288 bytes per object") == true, "\(String(describing: e))")

      e = await rpcError {
        _ = try await api.createWorkspace(
          .with {
            $0.name = "labelled"; $0.labels = labels
          })
      }
      #expect(e?.code == .invalidArgument, "\(String(describing: e))")
      // Nothing of the refused requests was recorded.
      let listed = try await api.listSandboxes(.with { $0.workspaceScope = .ws("default") })
      #expect(listed.sandboxes.isEmpty)
    }
  }

  /// Before: a message over the transport's 16 MiB limit got the stream reset (UNAVAILABLE, no reason).
  @Test func messagesOverEveryLimitAreAnsweredWithAStatusNamingIt() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    try await gw.withClient { api in
      for size in [17 << 20, 5 << 20] {
        let e = await rpcError {
          _ = try await api.createSandbox(
            .with {
              $0.name = "huge"; $0.annotations = ["blob": String(repeating: "x", count: size)]
            })
        }
        #expect(e?.code == .resourceExhausted, "\(size) bytes: \(String(describing: e))")
        #expect(e?.message.contains("CreateSandbox: request message of") == true, "\(String(describing: e))")
        #expect(e?.message.contains("exceeds the 4194304-byte limit") == true, "\(String(describing: e))")
      }
      // Under the message limit the request reaches the handler (whose per-object limit answers instead).
      let e = await rpcError {
        _ = try await api.createSandbox(
          .with {
            $0.name = "big"; $0.spec.template.driverConfig = Self.blob(3 << 20)
          })
      }
      #expect(e?.code == .resourceExhausted && e?.message.contains("524288 bytes per object") == true, "\(String(describing: e))")
      // The same connection still serves requests, and nothing of the refused ones was recorded.
      let ok = try await api.createSandbox(.with { $0.name = "small" })
      #expect(ok.sandbox.metadata.name == "small")
      let listed = try await api.listSandboxes(.with { $0.workspaceScope = .ws("default") })
      #expect(listed.sandboxes.map(\.metadata.name) == ["small"])
    }
  }

  static func blob(_ bytes: Int) -> Google_Protobuf_Struct {
    Google_Protobuf_Struct(fields: ["blob": Google_Protobuf_Value(stringValue: String(repeating: "b", count: bytes))])
  }

  /// 12 sandboxes with 400 KB specs (4.8 MB in all): the default list answers pages under the byte budget and
  /// page tokens continue until every sandbox was listed once. Unbounded, one answer would exceed the 4 MiB a
  /// gRPC client accepts.
  @Test func listPagesAreBoundedByBytes() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    try await gw.withClient { api in
      for i in 0..<12 {
        _ = try await api.createSandbox(
          .with {
            $0.name = "wide-\(i)"; $0.spec.template.driverConfig = Self.blob(400_000)
          })
      }
      var names: [String] = []
      var token = ""
      var pages = 0
      repeat {
        let page = try await api.listSandboxes(
          .with {
            $0.workspaceScope = .ws("default"); $0.pageToken = token
          })
        let size = (try page.serializedBytes() as [UInt8]).count
        #expect(size <= ObjectLimits.maxListResponseBytes + 64 * 1024, "page of \(size) bytes")
        #expect(!page.sandboxes.isEmpty)
        names += page.sandboxes.map(\.metadata.name)
        token = page.nextPageToken
        pages += 1
      } while !token.isEmpty && pages < 20
      #expect(pages >= 3, "4.8 MB cannot fit in fewer than three 2 MiB pages")
      #expect(names.sorted() == (0..<12).map { "wide-\($0)" }.sorted())
    }
  }
}
