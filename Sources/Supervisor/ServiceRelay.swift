import CSockDiag
import Foundation
import GRPCCore
import OpenShellAPI
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

extension Session {
  /// One exposed-service connection (`RelayOpen{service_id: "service", target.tcp{port}}`, see
  /// ``SandboxProtocol/serviceRelay``): connects to 127.0.0.1:`port` inside the sandbox's network
  /// namespace (OpenShell's service exposures are loopback HTTP services of the sandbox) and copies
  /// bytes both ways until either side ends. Only loopback is dialled, whatever host the target names
  /// besides `127.0.0.1`/`localhost`/empty (those are refused); nothing listening ends the channel at
  /// once without a byte, which the gateway answers with 502.
  /// With `reply` (ForwardTcp's ``SandboxProtocol/tcpForwardService``) a refusal is a `RelayOpenResult`
  /// failure naming the reason instead.
  func relayService(_ open: Openshell_V1_RelayOpen, reply: RelayReplies?) async {
    func refuse(_ why: String) async {
      logs.log("service: \(why)", level: "WARN")
      if let reply {
        reply.refuse(open.channelID, why)
        return
      }
      _ = try? await client.relayStream(
        request: StreamingClientRequest(metadata: metadata) { writer in
          try await writer.write(.with { $0.init_p = .with { $0.channelID = open.channelID } })
        }
      ) { _ in }
    }
    guard case .tcp(let target)? = open.target, (1...65535).contains(target.port), ["", "127.0.0.1", "localhost"].contains(target.host) else {
      await refuse("relay for an invalid service target refused")
      return
    }
    guard let path = config.launch.networkNamespacePath else {
      await refuse("no network namespace to reach port \(target.port) in")
      return
    }
    let ns = Glibc.open(path, O_RDONLY | O_CLOEXEC)
    guard ns >= 0 else {
      await refuse("cannot open the network namespace: \(String(cString: strerror(errno)))")
      return
    }
    let socket = csockdiag_connect_loopback_in_netns(ns, UInt16(target.port))
    Glibc.close(ns)
    guard socket >= 0 else {
      await refuse("nothing accepts connections on 127.0.0.1:\(target.port) in the sandbox (\(String(cString: strerror(-socket))))")
      return
    }
    let input = PipeWriter(fd: socket)
    do {
      try await client.relayStream(
        request: StreamingClientRequest(metadata: metadata) { writer in
          try await writer.write(.with { $0.init_p = .with { $0.channelID = open.channelID } })
          let output = BoundedPipeReader(fd: dup(socket))
          for await chunk in output.chunks {
            try await writer.write(.with { $0.data = chunk })
            output.consumed()
          }
        }
      ) { response in
        for try await frame in response.messages {
          if case .data(let d)? = frame.payload, !d.isEmpty { await input.write(d) }
        }
        // The gateway is done (the response was delivered or its client went away).
        shutdown(socket, Int32(SHUT_RDWR))
      }
    } catch {
      FileHandle.standardError.write(Data("openshell-sandbox: service relay \(open.channelID): \(error)\n".utf8))
    }
    shutdown(socket, Int32(SHUT_RDWR))
    input.close()
  }
}
