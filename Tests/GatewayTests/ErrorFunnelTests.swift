import EventLog
import Foundation
import GRPCCore
import GRPCProtobuf
import Gateway
import Logging
import NIOCore
import Projections
import Synchronization
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// One error funnel (issue 16): domain errors carry their status and are converted in one place; none
/// reaches a client as UNKNOWN. Each RPC case below answered UNKNOWN ("Service method threw an unknown
/// error") before the funnel.
@Suite struct ErrorFunnelTests {
  /// The code, message and gateway reason of a failed call.
  static func failure(_ body: () async throws -> Void) async -> (code: RPCError.Code, message: String, reason: String?)? {
    do {
      try await body()
      return nil
    } catch let e as RPCError {
      return (e.code, e.message, e.gatewayReason)
    } catch {
      return (.unknown, "\(error)", nil)
    }
  }

  /// A record this build cannot decode (payload schema version 99), on `aggregate`.
  static func undecodable(_ aggregate: AggregateRef) -> NewEvent {
    NewEvent(type: "sandbox.provider_attached", aggregate: aggregate, actor: "test", requestID: "", payloadVersion: 99, payload: [1, 2, 3])
  }

  @Test("a watch meeting a record it cannot decode ends DATA_LOSS naming the record (was UNKNOWN)")
  func watchUndecodableRecord() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      let s = try await api.createSandbox(.with { $0.name = "watched" }).sandbox
      let failure = await Self.failure {
        try await api.watchSandbox(
          .with {
            $0.sandbox = "watched"; $0.followEvents = true
          }
        ) { response in
          var iterator = response.messages.makeAsyncIterator()
          _ = try await iterator.next()  // the current status
          _ = try await gw.running.store.log.append([Self.undecodable(.sandbox(s.metadata.id))])
          while try await iterator.next() != nil {}
        }
      }
      let f = try #require(failure, "the watch must end with an error")
      #expect(f.code == .dataLoss, "got \(f)")
      #expect(f.message.contains("cannot be decoded") && f.message.contains("unsupported payload schema version 99"), "got \(f)")
      #expect(f.reason == GatewayErrorReason.projection)
    }
    await gw.stop()
  }

  @Test("a command whose records cannot be applied answers DATA_LOSS (was UNKNOWN)")
  func commandAfterUndecodableRecord() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      _ = try await gw.running.store.log.append([Self.undecodable(.sandbox("nobody"))])
      let f = try #require(await Self.failure { _ = try await api.createSandbox(.with { $0.name = "after" }) })
      #expect(f.code == .dataLoss, "got \(f)")
      #expect(f.message.contains("openshell-replay verify"), "says what to do: \(f)")
      #expect(f.reason == GatewayErrorReason.projection)
    }
    await gw.stop()
  }

  @Test("reading a closed event log answers UNAVAILABLE, the gateway is stopping (was UNKNOWN)")
  func closedLogRead() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      _ = try await api.createSandbox(.with { $0.name = "closing" })
      gw.running.store.log.close()
      let f = try #require(
        await Self.failure {
          try await api.watchSandbox(
            .with {
              $0.sandbox = "closing"; $0.eventTail = 5
            }
          ) { response in
            for try await _ in response.messages {}
          }
        })
      #expect(f.code == .unavailable, "got \(f)")
      #expect(f.message.contains("event log is closed"), "got \(f)")
      #expect(f.reason == GatewayErrorReason.logUnavailable)
    }
    await gw.stop()
  }

  @Test("every status carries a gateway reason; an unclassified error is INTERNAL naming its type, never UNKNOWN")
  func funnelMapping() throws {
    struct Unclassified: Error {}
    let e = ErrorFunnel.rpcError(Unclassified(), rpc: "Test")
    #expect(e.code == .internalError)
    #expect(e.message.contains("Unclassified") && e.gatewayReason == GatewayErrorReason.internalError)

    let conflict = ErrorFunnel.rpcError(
      EventLogError(code: .conflict, message: "sandbox/x expected 3, is 4", aggregate: .sandbox("x")), rpc: "Test")
    #expect(conflict.code == .aborted && conflict.gatewayReason == GatewayErrorReason.concurrentModification)
    let details = try #require(try conflict.unpackGoogleRPCStatus()).details
    #expect(details.contains { $0.retryInfo != nil }, "a conflict says it can be retried")

    let full = ErrorFunnel.rpcError(EventLogError(code: .diskFull, message: "ENOSPC", errno: 28), rpc: "Test")
    #expect(full.code == .resourceExhausted && full.gatewayReason == GatewayErrorReason.storageFull)

    // A handler's own RPCError keeps its code and message and gains the reason that marks it as the gateway's.
    let own = ErrorFunnel.rpcError(RPCError(code: .notFound, message: "sandbox default/x not found"), rpc: "Test")
    #expect(own.code == .notFound && own.message == "sandbox default/x not found")
    #expect(own.gatewayReason == GatewayErrorReason.unspecified)
    #expect(ErrorFunnel.rpcError(CancellationError(), rpc: "Test").code == .cancelled)
    #expect(ErrorFunnel.rpcError(ResourceLimitsError("memory \"lots\" is not a quantity"), rpc: "Test").code == .invalidArgument)
  }

  /// Keeps every record logged through it (level and message).
  final class CapturingLog: LogHandler, @unchecked Sendable {
    let records = Mutex<[(Logger.Level, String)]>([])
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
      get { metadata[key] }
      set { metadata[key] = newValue }
    }
    func log(
      level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt
    ) {
      records.withLock { $0.append((level, "\(message)")) }
    }
  }

  @Test("a peer gone mid-write (NIO's I/O on closed channel, EPIPE, ECONNRESET) is UNAVAILABLE at debug level, not an unclassified INTERNAL error")
  func peerGoneIsUnavailable() throws {
    let gone: [any Error] = [
      ChannelError.ioOnClosedChannel, ChannelError.alreadyClosed, ChannelError.outputClosed, ChannelError.eof,
      IOError(errnoCode: EPIPE, reason: "write"), IOError(errnoCode: ECONNRESET, reason: "read"),
      // As grpc-swift passes up what an inner interceptor threw.
      RPCError(code: .unknown, message: "Service method threw an unknown error.", cause: ChannelError.ioOnClosedChannel),
    ]
    for error in gone {
      let capture = CapturingLog()
      let e = ErrorFunnel.rpcError(error, rpc: "RelayStream", log: Logger(label: "test") { _ in capture })
      #expect(e.code == .unavailable, "\(error): \(e)")
      #expect(e.gatewayReason == GatewayErrorReason.peerGone, "\(error)")
      #expect(e.message == "the connection to the peer closed during RelayStream", "\(e)")
      let records = capture.records.withLock { $0 }
      #expect(records.count == 1 && records.allSatisfy { $0.0 == .debug }, "\(error): \(records)")
      #expect(!records.contains { $0.1.contains("unclassified") }, "\(records)")
    }
    // Other NIO errors are still unclassified: INTERNAL, logged as errors.
    for error: any Error in [ChannelError.connectTimeout(.seconds(1)), IOError(errnoCode: EACCES, reason: "open")] {
      let capture = CapturingLog()
      let e = ErrorFunnel.rpcError(error, rpc: "RelayStream", log: Logger(label: "test") { _ in capture })
      #expect(e.code == .internalError && e.gatewayReason == GatewayErrorReason.internalError, "\(error): \(e)")
      let records = capture.records.withLock { $0 }
      #expect(records.count == 1 && records[0].0 == .error && records[0].1.contains("unclassified error"), "\(records)")
    }
  }

  @Test("a status through the wire carries the gateway's reason (so the CLI can tell it from its transport)")
  func reasonOnTheWire() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      do {
        _ = try await api.getSandbox(.with { $0.name = "nosuch" })
        Issue.record("expected NOT_FOUND")
      } catch let e as RPCError {
        #expect(e.code == .notFound && e.message == "sandbox default/nosuch not found")
        #expect(e.gatewayReason == GatewayErrorReason.unspecified)
      }
    }
    await gw.stop()
  }
}
