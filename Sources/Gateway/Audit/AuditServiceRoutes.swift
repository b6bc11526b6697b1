import GRPCCore
import GRPCProtobuf
import OpenShellAPI

extension AuditService {
  /// Registers the service's methods: as generated (Sources/OpenShellAPI/Generated/audit.grpc.swift), except
  /// WatchEvents and WatchEventBatches, whose serializers write the watch's batches as the bytes
  /// ``AuditWireBatch`` already holds (the same wire format; no `AuditEvent` values are built, and nothing is
  /// encoded twice). This is the conformance's `registerMethods`, so every server that hosts the service
  /// routes the two watches this way.
  public func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
    GeneratedRoutes(service: self).registerMethods(with: &router)
    typealias Method = Openshell_Audit_V1_AuditService.Method
    router.registerHandler(
      forMethod: Method.WatchEventBatches.descriptor, deserializer: ProtobufDeserializer<Openshell_Audit_V1_WatchEventsRequest>(),
      serializer: AuditWireBatchSerializer()
    ) { request, context in
      let message = try await ServerRequest(stream: request).message
      return StreamingServerResponse(metadata: [:]) { writer in
        try await self.watch("WatchEventBatches", message).run { try await writer.write($0) }
        return [:]
      }
    }
    router.registerHandler(
      forMethod: Method.WatchEvents.descriptor, deserializer: ProtobufDeserializer<Openshell_Audit_V1_WatchEventsRequest>(),
      serializer: AuditWireEventSerializer()
    ) { request, context in
      let message = try await ServerRequest(stream: request).message
      return StreamingServerResponse(metadata: [:]) { writer in
        try await self.watch("WatchEvents", message).run { batch in
          try await writer.write(contentsOf: (0..<batch.count).map { AuditWireEvent(batch: batch, index: $0) })
        }
        return [:]
      }
    }
  }

  /// The service under the generated default registration (which ``registerMethods(with:)`` above shadows).
  private struct GeneratedRoutes: Openshell_Audit_V1_AuditService.SimpleServiceProtocol {
    let service: AuditService

    func queryEvents(request: Openshell_Audit_V1_QueryEventsRequest, context: ServerContext) async throws -> Openshell_Audit_V1_QueryEventsResponse {
      try await service.queryEvents(request: request, context: context)
    }

    func watchEvents(
      request: Openshell_Audit_V1_WatchEventsRequest, response: RPCWriter<Openshell_Audit_V1_AuditEvent>, context: ServerContext
    ) async throws {
      try await service.watchEvents(request: request, response: response, context: context)
    }

    func watchEventBatches(
      request: Openshell_Audit_V1_WatchEventsRequest, response: RPCWriter<Openshell_Audit_V1_WatchEventsResponse>, context: ServerContext
    ) async throws {
      try await service.watchEventBatches(request: request, response: response, context: context)
    }

    func getSandboxAt(request: Openshell_Audit_V1_GetSandboxAtRequest, context: ServerContext) async throws -> Openshell_Audit_V1_GetSandboxAtResponse {
      try await service.getSandboxAt(request: request, context: context)
    }

    func verifyLog(request: Openshell_Audit_V1_VerifyLogRequest, context: ServerContext) async throws -> Openshell_Audit_V1_VerifyLogResponse {
      try await service.verifyLog(request: request, context: context)
    }
  }
}
