import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import OpenShellAPI
import SandboxProtocol
import Synchronization

/// The long-lived ConnectSupervisor session and the relay channels it opens.
struct Session: Sendable {
  let config: SupervisorConfig
  let workload: Workload
  let logs: LogPusher
  let client: Openshell_V1_OpenShell.Client<RenewingTransport>
  let metadata: Metadata
  /// Opens when the gateway accepted a session for the first time.
  let ready: AsyncGate
  /// Opens once the network enforcement runs: no hello (and so no READY) before it.
  let networkUp: AsyncGate

  func run() async {
    var backoff = Duration.milliseconds(200)
    var epoch: UInt64 = 0
    var lastContact = ContinuousClock.now
    var lastError = ""
    var lastErrorLogged = ContinuousClock.now
    // A supervisor whose gateway stays unreachable this long (default 10 min) exits, so sandboxes of a
    // gateway that is gone for good do not run forever; a gateway that comes back later restarts it.
    let orphanTimeout = Duration.seconds(Int64(ProcessInfo.processInfo.environment["OPENSHELL_SUPERVISOR_ORPHAN_TIMEOUT"] ?? "") ?? 600)
    while !Task.isCancelled {
      epoch += 1
      let accepted = SharedFlag()
      // What the supervisor sends on the session besides hello: heartbeats and relay refusals
      // (``RelayReplies``); bounded, a refusal that does not fit is dropped (the gateway's open times out).
      let (control, replies) = AsyncStream<Openshell_V1_SupervisorMessage>.makeStream(bufferingPolicy: .bufferingOldest(64))
      let heartbeat = Task {
        while !Task.isCancelled {
          try await Task.sleep(for: .seconds(10))
          replies.yield(.with { $0.heartbeat = .init() })
        }
      }
      defer {
        heartbeat.cancel()
        replies.finish()
      }
      let hello = Openshell_V1_SupervisorMessage.with {
        $0.hello = .with {
          $0.sandboxID = config.sandboxID
          $0.instanceID = config.launch.instanceID
          $0.connectionEpoch = epoch
        }
      }
      do {
        try await client.connectSupervisor(
          request: StreamingClientRequest(metadata: metadata) { writer in
            await networkUp.wait()
            try await writer.write(hello)
            for await message in control { try await writer.write(message) }
          }
        ) { response in
          for try await message in response.messages {
            switch message.payload {
            case .sessionAccepted:
              accepted.set()
              ready.open()
              ConfigAgent.refresh()
              ProviderEnvironmentAgent.refresh()
              logs.log("connected to the gateway; sandbox ready")
            case .relayOpen(let open):
              let reply = RelayReplies(replies)
              Task { await relay(open, reply: reply) }
            case .configUpdate(let update):
              ConfigAgent.deliver(update)
              ProviderEnvironmentAgent.deliver(update)
            case .sessionRejected(let r):
              logs.log("gateway rejected the session: \(r.reason)", level: "WARN")
            default:
              break
            }
          }
        }
      } catch {
        // While the gateway is away the same error repeats about once a second: log it when it changes
        // and then once a minute.
        let text = config.describeConnectionError(error)
        if text != lastError || ContinuousClock.now - lastErrorLogged > .seconds(60) {
          FileHandle.standardError.write(Data("openshell-sandbox: session: \(text)\n".utf8))
          lastError = text
          lastErrorLogged = .now
        }
      }
      if accepted.isSet {
        backoff = .milliseconds(200)
        lastContact = .now
      } else if ContinuousClock.now - lastContact > orphanTimeout {
        FileHandle.standardError.write(Data("openshell-sandbox: gateway unreachable for \(orphanTimeout); exiting\n".utf8))
        workload.killAll()
        exit(0)
      }
      try? await Task.sleep(for: backoff)
      backoff = min(backoff * 2, .seconds(1))
    }
  }

  /// One relay channel: `exec` (below), `ssh` (``relaySSH(_:)``) or `exec-interactive` (``relayInteractive(_:)``).
  func relay(_ open: Openshell_V1_RelayOpen, reply: RelayReplies) async {
    if open.serviceID == SandboxProtocol.sshService {
      await relaySSH(open)
      return
    }
    if open.serviceID == SandboxProtocol.serviceRelay {
      await relayService(open, reply: nil)
      return
    }
    if open.serviceID == SandboxProtocol.tcpForwardService {
      await relayService(open, reply: reply)
      return
    }
    if open.serviceID == SandboxProtocol.interactiveExecService {
      await relayInteractive(open)
      return
    }
    guard open.serviceID == SandboxProtocol.execService else {
      logs.log("relay for unknown service \(open.serviceID.debugDescription) refused", level: "WARN")
      return
    }
    let (events, sink) = AsyncStream<Data>.makeStream()
    let gatewayDone = SharedFlag()
    do {
      try await client.relayStream(
        request: StreamingClientRequest(metadata: metadata) { writer in
          try await writer.write(.with { $0.init_p = .with { $0.channelID = open.channelID } })
          for await data in events { try await writer.write(.with { $0.data = data }) }
        }
      ) { response in
        var iterator = response.messages.makeAsyncIterator()
        var request: Openshell_V1_ExecSandboxRequest?
        while request == nil, let frame = try await iterator.next() {
          if case .data(let d)? = frame.payload { request = try Openshell_V1_ExecSandboxRequest(serializedBytes: d) }
        }
        guard let request else {
          sink.finish()
          return
        }
        let exec = Task {
          await workload.exec(request, cancelled: { gatewayDone.isSet }) { event in
            if let data = try? event.serializedData() { sink.yield(data) }
          }
          sink.finish()
        }
        // The gateway ends its side after the exit event, or early when its caller went away; a broken
        // stream means the same (nobody is left to read the output): either way a command still running
        // is killed.
        do {
          while (try await iterator.next()) != nil {}
        } catch {
          gatewayDone.set()
          throw error
        }
        gatewayDone.set()
        _ = await exec.value
      }
    } catch {
      sink.finish()
      FileHandle.standardError.write(Data("openshell-sandbox: relay \(open.channelID): \(error)\n".utf8))
    }
  }
}

/// How a relay handler refuses a channel on the ConnectSupervisor stream (`RelayOpenResult`).
struct RelayReplies: Sendable {
  let continuation: AsyncStream<Openshell_V1_SupervisorMessage>.Continuation
  init(_ continuation: AsyncStream<Openshell_V1_SupervisorMessage>.Continuation) { self.continuation = continuation }
  func refuse(_ channelID: String, _ why: String) {
    continuation.yield(
      .with {
        $0.relayOpenResult = .with {
          $0.channelID = channelID; $0.success = false; $0.error = why
        }
      })
  }
}
