import GRPCCore
import Synchronization

/// Ends long-lived subscription streams when a graceful shutdown begins.
///
/// A graceful shutdown lets in-flight RPCs finish, but subscriptions (a supervisor's `ConnectSupervisor`
/// session, `WatchSandbox`, `WatchInferenceBundle`, `PushSandboxLogs`) never finish on their own, so the
/// shutdown would always wait out its whole grace period. Once ``begin()`` is called, each running
/// subscription is cancelled and ends with UNAVAILABLE "gateway is shutting down", and new ones are refused
/// the same way; clients reconnect with backoff to the restarted gateway. Unary RPCs and execs are left
/// to finish within the grace period.
public final class SubscriptionDrain: Sendable {
  private struct State {
    var draining = false
    var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    var nextID = 0
  }

  private let state = Mutex(State())

  /// A drain that has not begun.
  public init() {}

  /// Whether draining has begun.
  public var isDraining: Bool { state.withLock { $0.draining } }

  /// Starts draining (idempotent): wakes every subscription waiting in ``waitUntilDraining()``.
  public func begin() {
    let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
      guard !s.draining else { return [] }
      s.draining = true
      defer { s.waiters = [:] }
      return Array(s.waiters.values)
    }
    for w in waiters { w.resume() }
  }

  /// Returns when draining begins, or when the calling task is cancelled.
  func waitUntilDraining() async {
    let id = state.withLock { s -> Int in
      s.nextID += 1
      return s.nextID
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        let resumeNow = state.withLock { s -> Bool in
          if s.draining || Task.isCancelled { return true }
          s.waiters[id] = c
          return false
        }
        if resumeNow { c.resume() }
      }
    } onCancel: {
      let w = state.withLock { $0.waiters.removeValue(forKey: id) }
      w?.resume()
    }
  }

  /// The drain of the server handling the current RPC (set by ``SubscriptionDrainInterceptor`` for the
  /// subscription methods), for handlers whose work happens before a response exists (client streaming).
  @TaskLocal public static var current: SubscriptionDrain?

  /// The drain of the server handling the current RPC, for every RPC (set by ``SubscriptionDrainInterceptor``).
  /// gRPC cancels every running RPC when a graceful shutdown begins; a handler that lets in-flight work
  /// finish within the grace period (ExecSandbox) checks ``isDraining`` to tell that from a client that
  /// went away.
  @TaskLocal public static var server: SubscriptionDrain?

  /// Runs `body` in its own (unstructured) task until it finishes, draining begins, or the RPC is
  /// cancelled (`rpc`: its client went away), whichever is first.
  ///
  /// A body blocked reading a gRPC request stream does not react to cancellation, so it is not awaited
  /// once draining begins: it is cancelled and left to finish on its own (ending the RPC ends its request
  /// stream too). Cancelling the calling task cancels the body and returns at once.
  ///
  /// grpc-swift 2 does not cancel a handler's task when the client resets the stream or its connection
  /// closes: it only marks the RPC cancelled (`ServerContext.cancellation`). A subscription waiting for the
  /// next change (`WatchInferenceBundle` of a deleted sandbox) therefore ran forever and held its whole
  /// HTTP/2 connection's memory (issue 17: RSS grew ~90 KB per sandbox create/delete cycle); `rpc` ends it.
  /// - Throws: UNAVAILABLE "gateway is shutting down" when draining began first, `CancellationError` when
  ///   the caller was cancelled, CANCELLED when the RPC was, else whatever `body` throws.
  public func run<T: Sendable>(
    rpc: ServerContext.RPCCancellationHandle? = nil, _ body: @escaping @Sendable () async throws -> T
  ) async throws -> T {
    let outcome = OneShot<Result<T, any Error>>()
    let work = Task {
      do { outcome.deliver(.success(try await body())) } catch { outcome.deliver(.failure(error)) }
    }
    let watcher = Task {
      await self.waitUntilDraining()
      guard !Task.isCancelled else { return }
      outcome.deliver(.failure(Self.shuttingDown))
      work.cancel()
    }
    let rpcWatcher = rpc.map { handle in
      Task {
        // Returns when the RPC is cancelled; throws when this watcher is cancelled (the body finished).
        guard (try? await handle.cancelled) != nil else { return }
        outcome.deliver(.failure(Self.clientGone))
        work.cancel()
      }
    }
    defer {
      watcher.cancel()
      rpcWatcher?.cancel()
    }
    let result = await withTaskCancellationHandler {
      await outcome.value
    } onCancel: {
      work.cancel()
      outcome.deliver(.failure(CancellationError()))
    }
    return try result.get()
  }

  /// The error a subscription whose client went away ends with (nobody receives it; metrics count it).
  static var clientGone: RPCError { RPCError(code: .cancelled, message: "the client cancelled the call or went away") }

  /// The error a drained subscription ends with.
  static var shuttingDown: RPCError { RPCError(code: .unavailable, message: "gateway is shutting down; reconnect later") }
}

/// A server interceptor that applies a ``SubscriptionDrain`` to the methods named in `methods`
/// (fully qualified, e.g. `openshell.v1.OpenShell/WatchSandbox`); other RPCs pass through unchanged.
public struct SubscriptionDrainInterceptor: ServerInterceptor {
  /// The long-lived streams of the OpenShell, inference and audit services.
  public static let defaultMethods: Set<String> = [
    "openshell.v1.OpenShell/ConnectSupervisor",
    "openshell.v1.OpenShell/WatchSandbox",
    "openshell.v1.OpenShell/PushSandboxLogs",
    "openshell.inference.v1.Inference/WatchInferenceBundle",
    // `openshell audit --follow` (history, then live for as long as the client stays).
    "openshell.audit.v1.AuditService/WatchEvents",
    "openshell.audit.v1.AuditService/WatchEventBatches",
  ]

  private let drain: SubscriptionDrain
  private let methods: Set<String>

  /// An interceptor treating `methods` (fully qualified, `package.Service/Method`) as subscriptions of `drain`.
  public init(drain: SubscriptionDrain, methods: Set<String> = Self.defaultMethods) {
    self.drain = drain
    self.methods = methods
  }

  /// For a subscription method: UNAVAILABLE once draining has begun, else runs it so that
  /// ``SubscriptionDrain/begin()`` cancels it. Every RPC sees the drain as the server's, so handlers can ask
  /// whether a shutdown began.
  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    guard methods.contains(context.descriptor.fullyQualifiedMethod) else {
      // Streaming responses are produced after `next` returned: the producer needs the value too.
      let response = try await SubscriptionDrain.$server.withValue(drain) { try await next(request, context) }
      guard case .success(var contents) = response.accepted else { return response }
      let producer = contents.producer
      contents.producer = { writer in try await SubscriptionDrain.$server.withValue(drain) { try await producer(writer) } }
      return StreamingServerResponse(accepted: .success(contents))
    }
    guard !drain.isDraining else { throw SubscriptionDrain.shuttingDown }
    // Client-streaming handlers consume their request inside `next`; they find the drain as `current`.
    let response = try await SubscriptionDrain.$server.withValue(drain) {
      try await SubscriptionDrain.$current.withValue(drain) { try await next(request, context) }
    }
    guard case .success(var contents) = response.accepted else { return response }
    let producer = contents.producer
    contents.producer = { writer in
      try await SubscriptionDrain.$server.withValue(drain) {
        try await SubscriptionDrain.$current.withValue(drain) {
          try await drain.run(rpc: context.cancellation) { try await producer(writer) }
        }
      }
    }
    return StreamingServerResponse(accepted: .success(contents))
  }
}

/// A value delivered once (later deliveries are ignored) and awaited once.
final class OneShot<Value: Sendable>: Sendable {
  private struct State {
    var value: Value?
    var waiter: CheckedContinuation<Value, Never>?
  }

  private let state = Mutex(State())

  init() {}

  /// Stores `value` and wakes the waiter, unless a value was delivered before.
  func deliver(_ value: Value) {
    let waiter = state.withLock { s -> CheckedContinuation<Value, Never>? in
      guard s.value == nil else { return nil }
      s.value = value
      defer { s.waiter = nil }
      return s.waiter
    }
    waiter?.resume(returning: value)
  }

  /// The delivered value (suspends until there is one).
  var value: Value {
    get async {
      await withCheckedContinuation { c in
        let ready = state.withLock { s -> Value? in
          if let v = s.value { return v }
          s.waiter = c
          return nil
        }
        if let ready { c.resume(returning: ready) }
      }
    }
  }
}
