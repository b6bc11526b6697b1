import EventLog
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import Projections
import Testing

@testable import Gateway

/// QueryEvents pages stay under the 4 MiB a gRPC client accepts by default, whatever `page_size` asks for
/// (`openshell audit -o ocsf` asks for 5000 with OCSF: on a gateway of ~3,200 provider records the page
/// was 4.5 MB and the CLI failed with RESOURCE_EXHAUSTED).
@Suite struct AuditQueryPageTests {
  typealias AuditClient = Openshell_Audit_V1_AuditService.Client<HTTP2ClientTransport.Posix>

  /// 1,300 exec records with a 3.5 KB command each (~4.6 MB of summaries; twice that with OCSF), read with
  /// page_size 5000 through a client with the default 4 MiB limit: several pages, each under that limit
  /// (``AuditService/maxPageBytes``), together every exec record once and in order.
  @Test func largeEventsArePagedUnderTheClientsMessageLimit() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    let log = gw.running.store.log
    let argument = String(repeating: "x", count: 3500)
    var appended: [UInt64] = []
    for b in 0..<13 {
      let events = (0..<100).map { i in
        GatewayEvent(
          .execStarted(
            .with {
              $0.sandboxID = "sb"; $0.execID = "e\(b)-\(i)"; $0.command = ["echo", argument]
            })
        )
        .newEvent(actor: "system", requestID: "")
      }
      appended += Array(try await log.append(events))
    }
    for ocsf in [false, true] {
      let (seqs, sizes) = try await withAudit(gw) { audit in
        var seqs: [UInt64] = []
        var sizes: [Int] = []
        var token = ""
        repeat {
          let page = try await audit.queryEvents(
            .with {
              $0.filter.types = ["exec.started"]; $0.pageSize = 5000; $0.pageToken = token; $0.includeOcsf = ocsf
            })
          sizes.append((try page.serializedBytes() as [UInt8]).count)
          #expect(page.events.allSatisfy { ($0.summary.contains(argument)) && (!ocsf || !$0.ocsf.isEmpty) })
          seqs += page.events.map(\.seq)
          token = page.nextPageToken
        } while !token.isEmpty
        return (seqs, sizes)
      }
      #expect(seqs == appended, "ocsf \(ocsf): \(seqs.count) events")
      #expect(sizes.count >= 2 && sizes.allSatisfy { $0 <= 4 << 20 }, "ocsf \(ocsf): \(sizes)")
    }
  }
}
